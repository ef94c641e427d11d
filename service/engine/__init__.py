"""The model engine: one process that owns the models and batches for every HTTP worker.

With `RNNSERVE_WORKERS=N` and `RNNSERVE_ENGINE=process`, N HTTP worker processes parse and answer
requests, and send their inputs over ZeroMQ to one engine process, whose batchers merge the inputs of
all workers into the same model calls (`server.py`). Each worker talks to it through one small
client (`client.py`); the messages are plain, typed and versioned (`protocol.py`). Each model's queue
state is shared on a memory-mapped board (`queue_state.py`), so that a worker refuses a request the
engine's queue would refuse before reading its body, as a single-process service does.
"""
