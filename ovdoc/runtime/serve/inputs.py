"""What a client may send to POST /v1/score, turned into decoded BGR images — or one line saying why not.

Three shapes, told apart by Content-Type:
    image/* or application/octet-stream (or none)  the body is one encoded image (PNG, JPEG, BMP, ...)
    multipart/form-data                            every part that carries a file is one image
    application/json                               {"images": ["<base64>", {"name": ..., "data": "<base64>"}],
                                                    "map": false}
Multipart is parsed with the standard library's email parser, so aiohttp and Ray Serve (Starlette) read
it identically without a further dependency.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

import numpy as np

MAX_BODY_BYTES = 32 * 1024 * 1024  # per request; a 4K PNG is ~10 MB, a batch of phone JPEGs fits
MAX_IMAGES = 64  # per request
MAX_PIXELS = 50_000_000  # per decoded image (a 50 MP sensor); guards against decompression bombs


class BadInput(Exception):
    """A request the client must fix: `status` (4xx) and one line."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Upload:
    """One encoded image as received."""

    name: str
    data: bytes


def truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def parse_body(content_type: str | None, body: bytes,
               max_images: int = MAX_IMAGES) -> tuple[list[Upload], bool]:
    """(uploads, map requested in the body) from a request's Content-Type and raw body."""
    if len(body) == 0:
        raise BadInput("the request body is empty: send an image, a multipart form or a JSON batch")
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    if kind == "application/json":
        uploads, want_map = _parse_json(body)
    elif kind == "multipart/form-data":
        uploads, want_map = _parse_multipart(content_type or "", body), False
    elif kind in ("", "application/octet-stream") or kind.startswith("image/"):
        uploads, want_map = [Upload("image", body)], False
    else:
        raise BadInput(f"unsupported Content-Type {kind!r}: send image/*, multipart/form-data or "
                       "application/json", status=415)
    if not uploads:
        raise BadInput("no image in the request")
    if len(uploads) > max_images:
        raise BadInput(f"{len(uploads)} images in one request; at most {max_images}", status=413)
    return uploads, want_map


def _parse_json(body: bytes) -> tuple[list[Upload], bool]:
    try:
        doc = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BadInput("the body is not valid JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
        raise BadInput('a JSON request is {"images": ["<base64>", ...]}')
    uploads = []
    for i, item in enumerate(doc["images"]):
        name, data = f"image{i}", item
        if isinstance(item, dict):
            name, data = str(item.get("name", name)), item.get("data")
        if not isinstance(data, str):
            raise BadInput(f'images[{i}] must be a base64 string or {{"name": ..., "data": "<base64>"}}')
        if data.startswith("data:"):  # a data URL, as a browser's FileReader gives it
            data = data.split(",", 1)[-1]
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise BadInput(f"images[{i}] is not valid base64") from None
        uploads.append(Upload(name, raw))
    return uploads, bool(doc.get("map", False))


def _parse_multipart(content_type: str, body: bytes) -> list[Upload]:
    from email.parser import BytesParser
    from email.policy import HTTP

    if "boundary=" not in content_type:
        raise BadInput("multipart/form-data without a boundary")
    message = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1", "replace") + b"\r\n\r\n" + body
    )
    if not message.is_multipart():
        raise BadInput("the multipart body could not be read")
    uploads = []
    for i, part in enumerate(message.iter_parts()):
        filename = part.get_filename()
        field = part.get_param("name", header="content-disposition")
        if filename is None and part.get_content_maintype() == "text":
            continue  # a plain form field, not a file
        data = part.get_payload(decode=True) or b""
        uploads.append(Upload(str(filename or field or f"image{i}"), data))
    return uploads


def decode(upload: Upload, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Encoded bytes -> BGR uint8 image; BadInput (one line) for anything OpenCV cannot read."""
    import cv2

    if not upload.data:
        raise BadInput(f"{upload.name}: empty image")
    try:
        image = cv2.imdecode(np.frombuffer(upload.data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error:  # e.g. over OpenCV's own pixel limit
        image = None
    if image is None or image.size == 0:
        raise BadInput(f"{upload.name}: not an image (PNG, JPEG, BMP, TIFF, WebP ... expected)", status=415)
    if image.shape[0] * image.shape[1] > max_pixels:
        raise BadInput(f"{upload.name}: {image.shape[1]}x{image.shape[0]} is over the limit of "
                       f"{max_pixels} pixels", status=413)
    return image


def decode_all(uploads: list[Upload], max_pixels: int = MAX_PIXELS) -> list[np.ndarray]:
    return [decode(u, max_pixels) for u in uploads]
