"""The messages between HTTP workers and the model engine, on their own."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest

from service.config import Settings
from service.engine.protocol import (
    ProtocolError,
    decode_inputs,
    decode_outputs,
    encode_inputs,
    encode_outputs,
    error_message,
    pack,
    raise_error,
    unpack,
)
from service.errors import InferenceFailed, Overloaded, QueueTimeout


def roundtrip(message: dict[str, object]) -> dict[str, object]:
    return unpack(pack(message))


def test_inputs_of_one_shape_and_of_many_lengths_travel_exactly() -> None:
    rng = np.random.default_rng(0)
    images = list(rng.random((5, 28, 28), dtype=np.float32))
    windows = [rng.random(n, dtype=np.float32) for n in (16, 256, 37)]
    for inputs in (images, windows):
        decoded = decode_inputs(roundtrip({"kind": "infer", **encode_inputs(inputs)}))
        assert len(decoded) == len(inputs)
        for got, sent in zip(decoded, inputs, strict=True):
            assert got.dtype == sent.dtype
            np.testing.assert_array_equal(got, sent)


def test_outputs_travel_stacked() -> None:
    outputs = [np.full((2, 4), i, dtype=np.float32) for i in range(3)]
    decoded = decode_outputs(roundtrip({"kind": "result", **encode_outputs(outputs)}))
    np.testing.assert_array_equal(np.stack(decoded), np.stack(outputs))


def test_an_error_is_raised_again_as_its_own_class() -> None:
    for error in (Overloaded("queue full"), QueueTimeout("too late")):
        with pytest.raises(type(error), match=error.message) as raised:
            raise_error(roundtrip(error_message(error)))
        assert raised.value.status_code == error.status_code


def test_an_unknown_error_class_becomes_an_inference_failure() -> None:
    with pytest.raises(InferenceFailed, match="odd"):
        raise_error({"kind": "error", "error": "SystemExit", "message": "odd"})


def test_another_protocol_version_or_garbage_is_refused_by_name() -> None:
    with pytest.raises(ProtocolError, match="version 99"):
        unpack(msgpack.packb({"v": 99, "kind": "infer"}))
    with pytest.raises(ProtocolError, match="unreadable"):
        unpack(b"\xc1")


@pytest.mark.parametrize(
    ("engine", "workers", "gpu", "device", "mode"),
    [
        ("auto", 1, True, "auto", "inline"),
        ("auto", 4, False, "auto", "inline"),
        ("auto", 4, True, "auto", "process"),
        ("auto", 4, True, "cpu", "inline"),
        ("process", 1, False, "auto", "process"),
        ("inline", 4, True, "auto", "inline"),
    ],
)
def test_auto_puts_the_models_in_an_engine_only_for_several_workers_on_a_gpu(
    engine: str, workers: int, gpu: bool, device: str, mode: str
) -> None:
    settings = Settings(engine=engine, workers=workers, device=device)  # type: ignore[arg-type]
    assert settings.engine_mode(gpu_available=gpu) == mode
