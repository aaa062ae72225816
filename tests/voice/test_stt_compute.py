"""Whisper's compute type (``AGENTIA_VOICE_STT_COMPUTE_TYPE``): chosen by the CPU when ``auto``,
validated, and the one CTranslate2 loads (no room, no network)."""

from __future__ import annotations

import pytest

from agentia.settings import SettingsError
from voice import worker
from voice.settings import COMPUTE_TYPES, VoiceSettings
from voice.speech import EspeakTTS, normalise
from voice.stt_whisper import AUTO_ELSE, MIXED, compute_type, cpu_flags
from voice.stt_whisper import COMPUTE_TYPES as CT2_TYPES

AVX2 = frozenset({"sse4_2", "avx", "avx2", "fma", "f16c"})
"""This project's session 13-14 box: an AMD EPYC with AVX2 and no AVX-512."""
AVX512 = AVX2 | {"avx512f", "avx512bw", "avx512vl"}
"""AVX-512 without its int8 dot products (Skylake-SP)."""


@pytest.mark.parametrize("flags", [AVX2 | {"avx_vnni"}, AVX512 | {"avx512_vnni"},
                                   AVX512 | {"avx512_vnni", "amx_int8"}])
def test_auto_is_int8_where_the_cpu_has_int8_dot_products(flags: frozenset[str]) -> None:
    assert compute_type("auto", flags) == "int8"


@pytest.mark.parametrize("flags", [AVX2, AVX512, frozenset()])
def test_auto_without_them_is_the_type_measured_best(flags: frozenset[str]) -> None:
    assert AUTO_ELSE != "int8"
    assert compute_type("auto", flags) == AUTO_ELSE


def test_a_type_set_explicitly_is_kept_whatever_the_cpu() -> None:
    for setting in ("int8", "int8_float32", "float32", "float32_encoder"):
        assert compute_type(setting, AVX2) == setting
        assert compute_type(setting, AVX512 | {"avx512_vnni"}) == setting


def test_auto_reads_this_machines_flags() -> None:
    flags = cpu_flags()
    assert "fpu" in flags or not flags  # /proc/cpuinfo's flags line, or nothing readable
    assert compute_type("auto") == compute_type("auto", flags)


def test_the_setting_takes_ctranslate2s_cpu_types_or_auto() -> None:
    import ctranslate2  # type: ignore[import-untyped]

    assert set(CT2_TYPES) - {MIXED} <= ctranslate2.get_supported_compute_types("cpu")
    assert ("auto", *CT2_TYPES) == COMPUTE_TYPES
    assert VoiceSettings().voice_stt_compute_type == "auto"
    for setting in COMPUTE_TYPES:
        VoiceSettings(voice_stt_compute_type=setting).validate()
    for wrong in ("float16", "INT8", "", "int16"):
        with pytest.raises(SettingsError, match="AGENTIA_VOICE_STT_COMPUTE_TYPE must be one of "
                                                "auto, int8, int8_float32, float32, "
                                                r"float32_encoder$"):
            VoiceSettings(voice_stt_compute_type=wrong).validate()


@pytest.mark.parametrize("setting", ["float32", "int8_float32"])
async def test_the_model_is_loaded_with_the_type_set(setting: str) -> None:
    stt = worker.whisper(VoiceSettings(voice_stt_model="tiny.en", voice_stt_compute_type=setting))
    assert stt.compute_type == setting
    assert stt._model.model.compute_type == setting  # what CTranslate2 itself runs
    speech = await EspeakTTS(wpm=170).synthesize("tell me about the weather").collect()
    heard = (await stt.recognize(speech)).alternatives[0].text
    assert normalise(heard) == "tell me about the weather"


async def test_float32_encoder_encodes_in_float32_and_decodes_in_int8() -> None:
    stt = worker.whisper(VoiceSettings(voice_stt_model="tiny.en",
                                       voice_stt_compute_type="float32_encoder"))
    assert stt.compute_type == "float32_encoder"
    assert stt._encoder.model.compute_type == "float32"  # the copy that encodes
    assert stt._model.model.compute_type == "int8_float32"  # the one that decodes
    speech = await EspeakTTS(wpm=170).synthesize("tell me about the weather").collect()
    heard = (await stt.recognize(speech)).alternatives[0].text
    assert normalise(heard) == "tell me about the weather"
