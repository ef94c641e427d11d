"""The KServe V2 / Open Inference Protocol, as Triton speaks it over HTTP: `tensors` (pure codecs),
`signatures` (each task's tensors, on the same model queues as REST) and `routes`."""
