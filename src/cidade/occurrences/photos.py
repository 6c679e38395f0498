"""Photos of occurrences: checked to be images, re-encoded without their metadata (a phone's
photo carries where it was taken and by which device: personal data), bounded in size."""

from __future__ import annotations

import io
import warnings

from PIL import Image, ImageOps, UnidentifiedImageError

from cidade.occurrences.errors import BadPhoto, PhotoTooLarge

FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/png"}
MAX_SIDE = 4096  # pixels, after re-encoding (larger ones are scaled down)
MAX_PIXELS = 50_000_000  # a decompression bomb is refused before it is decoded


def clean_photo(data: bytes, max_bytes: int) -> tuple[str, bytes]:
    """(media type, bytes) of the photo as it is kept: JPEG stays JPEG, the rest PNG or WebP;
    BadPhoto when it is not an image, PhotoTooLarge above ``max_bytes``."""
    if len(data) > max_bytes:
        raise PhotoTooLarge(f"a photo may have at most {max_bytes} bytes ({len(data)} sent)")
    if not data:
        raise BadPhoto("the photo is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.format not in FORMATS:
                raise BadPhoto(f"photos are JPEG, PNG, WebP or GIF images, not {image.format}")
            if image.width * image.height > MAX_PIXELS:
                raise BadPhoto("the photo has too many pixels")
            image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise BadPhoto("this is not a JPEG, PNG, WebP or GIF image") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BadPhoto("the photo has too many pixels") from exc
    fmt = image.format
    image = ImageOps.exif_transpose(image)  # keep how it was held, then drop the EXIF
    image.thumbnail((MAX_SIDE, MAX_SIDE))
    out = io.BytesIO()
    if fmt == "JPEG":
        image.convert("RGB").save(out, "JPEG", quality=85, optimize=True)
        return "image/jpeg", out.getvalue()
    if fmt == "WEBP":
        image.save(out, "WEBP", quality=85)
        return "image/webp", out.getvalue()
    image.save(out, "PNG", optimize=True)
    return "image/png", out.getvalue()
