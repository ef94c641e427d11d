"""rnnserve: the HTTP service that serves the recurrent models in `models/`."""
