"""``python -m voice``: run the voice worker (see :mod:`voice.worker`)."""

from voice.worker import main

if __name__ == "__main__":
    main()
