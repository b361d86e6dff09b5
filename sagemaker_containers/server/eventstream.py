"""The AWS event stream encoding (application/vnd.amazon.eventstream) of SageMaker's ResponseStream.

This is the stand-in's side of `InvokeEndpointWithResponseStream`, checked against botocore's parser
(`botocore.eventstream.EventStreamBuffer` for the framing, `botocore.parsers.EventStreamJSONParser`
with the `sagemaker-runtime` 2017-05-13 service model for the events), which the tests run on it:

- a message is a prelude (total length, headers length: big-endian uint32 each; CRC32 of those 8
  bytes), the headers, the payload, and the CRC32 of everything before it;
- a header is a 1-byte name length, the name, a type byte (7 = string), a 2-byte value length and
  the UTF-8 value;
- `PayloadPart` is an event (`:message-type` event, `:event-type` PayloadPart) whose member `Bytes`
  is the event payload itself (`eventpayload`, a blob): the raw bytes, not JSON, not base64;
- `ModelStreamError` and `InternalStreamFailure` are exceptions (`:message-type` exception,
  `:exception-type` NAME) with a JSON payload `{"Message": ..., "ErrorCode": ...}`; botocore raises
  them while iterating as `EventStreamError` with `response["Error"]["Code"]` = NAME.
"""

from __future__ import annotations

import asyncio
import json
import struct
import zlib
from collections.abc import AsyncIterator

CONTENT_TYPE = "application/vnd.amazon.eventstream"
_STRING = 7
_PRELUDE = struct.Struct(">II")


def _crc(data: bytes, value: int = 0) -> int:
    return zlib.crc32(data, value) & 0xFFFFFFFF


def encode_headers(headers: dict[str, str]) -> bytes:
    out = bytearray()
    for name, value in headers.items():
        raw_name, raw_value = name.encode("utf-8"), value.encode("utf-8")
        out += struct.pack(">B", len(raw_name)) + raw_name
        out += struct.pack(">BH", _STRING, len(raw_value)) + raw_value
    return bytes(out)


def encode_message(headers: dict[str, str], payload: bytes) -> bytes:
    """One event stream message."""
    raw_headers = encode_headers(headers)
    total = _PRELUDE.size + 4 + len(raw_headers) + len(payload) + 4
    prelude = _PRELUDE.pack(total, len(raw_headers))
    message = prelude + struct.pack(">I", _crc(prelude)) + raw_headers + payload
    return message + struct.pack(">I", _crc(message))


def payload_part(data: bytes) -> bytes:
    return encode_message(
        {":event-type": "PayloadPart", ":content-type": "application/octet-stream", ":message-type": "event"},
        data,
    )


def exception_event(exception_type: str, message: str, error_code: str | None = None) -> bytes:
    """A modelled stream exception: "ModelStreamError" (ErrorCode "StreamBroken" or
    "ModelInvocationTimeExceeded") or "InternalStreamFailure"."""
    body: dict[str, str] = {"Message": message}
    if error_code:
        body["ErrorCode"] = error_code
    headers = {
        ":exception-type": exception_type,
        ":content-type": "application/json",
        ":message-type": "exception",
    }
    return encode_message(headers, json.dumps(body).encode("utf-8"))


async def payload_parts(
    chunks: AsyncIterator[bytes], size: int = 0, linger_s: float = 0.02
) -> AsyncIterator[bytes]:
    """Encoded PayloadPart messages for the container's byte stream.

    `size` 0 sends each write of the container as one part. Otherwise the stream is re-cut into parts
    of exactly `size` bytes, as SageMaker may cut it: a JSON line (even a UTF-8 character) straddles
    parts, and one part may end a line and begin the next. A remainder shorter than `size` waits at
    most `linger_s` for more bytes, so that a slow stream is not held back.
    """
    if size < 0:
        raise ValueError("payload split size must be zero or positive")
    if not size:
        async for chunk in chunks:
            if chunk:
                yield payload_part(chunk)
        return
    pending = bytearray()
    source = aiter(chunks)
    step: asyncio.Future[bytes] | None = None
    try:
        while True:
            # One pending read survives the linger timeout: cancelling it would cancel the generation.
            step = asyncio.ensure_future(anext(source))
            if pending:
                done, _ = await asyncio.wait({step}, timeout=linger_s)
                if not done:
                    yield payload_part(bytes(pending))
                    pending.clear()
            try:
                pending += await step
            except StopAsyncIteration:
                break
            except Exception:
                if pending:  # what the container sent before it failed still reaches the caller
                    yield payload_part(bytes(pending))
                raise
            while len(pending) >= size:
                yield payload_part(bytes(pending[:size]))
                del pending[:size]
        if pending:
            yield payload_part(bytes(pending))
    finally:
        if step is not None and not step.done():
            step.cancel()
