"""8-bit PNG/JPEG display images, mapped to HU through a declared window (default: lung)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lowdose.errors import LowdoseError
from lowdose.image import CTImage, Window
from lowdose.io.atomic import atomic_path
from lowdose.io.base import readers, writers
from lowdose.io.formats.common import (
    FormatReader,
    FormatWriter,
    check_finite,
    default_window,
    describe_window,
    one_line,
    refuse_input_overwrite,
    window_name,
)

# PNG text key that records the window a lowdose PNG was written with, so it reads back to HU.
WINDOW_KEY = "lowdose:window"


#: A pixel is coloured where its channels differ by more than this (JPEG's chroma noise on a
#: grey image stays below it).
COLOUR_LEVELS = 30
#: The share of coloured pixels from which an image is said to carry colour marks.
COLOUR_SHARE = 1e-3
#: What the reader's warning about them says (the study counts them by it).
COLOURED = "of the pixels are coloured"


def colour_share(img) -> float:
    """The share of a PIL image's pixels whose colour channels differ by more than
    :data:`COLOUR_LEVELS` grey levels: coloured marks (an annotation line, a measurement) on a
    grey CT screenshot, which grey conversion turns into HU that are not the patient's.

    Example:
        >>> from PIL import Image
        >>> im = Image.new("RGB", (10, 10), (90, 90, 90))
        >>> im.putpixel((0, 0), (255, 0, 0))
        >>> colour_share(im), colour_share(im.convert("L"))
        (0.01, 0.0)
    """
    if img.mode in ("L", "LA", "I", "I;16", "I;16B", "I;16L", "F", "1"):
        return 0.0
    rgb = np.asarray(img.convert("RGB"), np.int16)
    spread = rgb.max(axis=2) - rgb.min(axis=2)
    return float(np.mean(spread > COLOUR_LEVELS))


def _grey_8bit(img, path: Path) -> np.ndarray:
    """Greyscale uint8 pixels of a PIL image (RGBA composited over black, RGB to luma)."""
    from PIL import Image

    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        raise LowdoseError(
            f"{path}: unsupported dtype ({mode} pixels); only 8-bit display images map to HU "
            "through a window; store HU as .npy, NIfTI or DICOM"
        )
    if mode == "P":
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        # Transparent pixels become black (air), the way viewers show them on a dark canvas.
        canvas = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        img = Image.alpha_composite(canvas, rgba)
    if img.mode != "L":
        img = img.convert("L")
    return np.asarray(img, dtype=np.uint8)


@readers.register("png")
class PngReader(FormatReader):
    """8-bit PNG or JPEG (grey, RGB, RGBA; format sniffed from content, not the name).

    Pixel values v in [0, 255] become HU = lo + v/255 * (hi - lo) for the window [lo, hi]:
    the ``window`` option, else the window a lowdose PNG recorded, else the lung window.
    """

    suffixes = (".png", ".jpg", ".jpeg")
    sniffed_as = ("png", "jpeg")

    def read(self, path: Path) -> CTImage:
        from PIL import Image, UnidentifiedImageError

        path = Path(path)
        try:
            with Image.open(path) as img:
                img.load()
                fmt = img.format
                mode = img.mode
                text = dict(getattr(img, "text", {}) or {})
                coloured = colour_share(img)
                grey = _grey_8bit(img, path)
        except UnidentifiedImageError:
            raise LowdoseError(f"{path}: not a readable PNG/JPEG image") from None
        except (OSError, SyntaxError, ValueError) as exc:
            raise LowdoseError(f"{path}: corrupt or truncated image ({one_line(exc)})") from None
        window, window_source = self._window(text, path)
        hu = window.from_unit(grey.astype(np.float32) / 255.0)
        if coloured >= COLOUR_SHARE:
            import warnings

            warnings.warn(f"{path}: {100 * coloured:.2g}% {COLOURED} (an annotation or a "
                          "mark?); read as grey levels, they become HU that are not the "
                          "patient's", stacklevel=2)
        return CTImage(
            hu,
            spacing=(1.0, 1.0),
            metadata={
                "format": (fmt or "image").lower(),
                "source": str(path.resolve()),
                "image_mode": mode,
                "window": [window.lo, window.hi],
                "window_name": window_name(window),
                "window_source": window_source,
                "hu_note": f"8-bit display values mapped to HU through the window "
                f"{describe_window(window)}; HU outside it were clipped when the image was made",
                "spacing_known": False,
            },
        )

    def _window(self, text: dict, path: Path) -> tuple[Window, str]:
        if self.options.window is not None:
            return self.options.window, "given"
        if WINDOW_KEY in text:
            try:
                lo, hi = (float(v) for v in str(text[WINDOW_KEY]).split(","))
                return Window(lo, hi), "recorded in the PNG by lowdose"
            except ValueError:
                pass
        return default_window(), "default (lung)"


def _read_window(image: CTImage) -> Window | None:
    """The window an 8-bit image was read through (its metadata), so a restored or upscaled
    PNG is written back through it, not through the lung window."""
    window = image.metadata.get("window")
    try:
        return Window(float(window[0]), float(window[1])) if window else None
    except (TypeError, ValueError, IndexError):
        return None


@writers.register("png")
class PngWriter(FormatWriter):
    """A 2D slice as 8-bit grey PNG through a window (the given one, else the one the image
    was read through, else lung), recorded in the file."""

    suffixes = (".png",)
    one_slice_suffixes = (".png",)

    def write(self, image: CTImage, path: Path) -> Path:
        from PIL import Image, PngImagePlugin

        path = Path(path)
        self.check(image.n_slices, path)
        refuse_input_overwrite(image, path, is_folder=False)
        check_finite(image.hu, path)
        window = self.options.window or _read_window(image) or default_window()
        pixels = np.round(window.to_unit(image.slices()[0]) * 255.0).astype(np.uint8)
        info = PngImagePlugin.PngInfo()
        info.add_text(WINDOW_KEY, f"{window.lo:g},{window.hi:g}")
        info.add_text("Description", f"CT slice, HU window {describe_window(window)}")
        with atomic_path(path) as tmp:
            Image.fromarray(pixels, mode="L").save(tmp, format="PNG", pnginfo=info)
        return path
