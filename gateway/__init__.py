"""Edge: WebSocket processes that hold connections and move frames."""
