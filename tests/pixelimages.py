"""Images with burned-in text, made for the Clean Pixel Data tests and benchmark (Pillow).

Each image knows where its text is (``text_mask``: the pixels the text was drawn on) so that
tests judge by pixels, and which words identify (``words``) so that they judge by reading the
output back with OCR.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, generate_uid

FONTS = {
    "sans": "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "sans-bold": "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
    "mono": "/usr/share/fonts/opentype/urw-base35/NimbusMonoPS-Regular.otf",
    "serif": "/usr/share/fonts/opentype/urw-base35/NimbusRoman-Regular.otf",
    "narrow": "/usr/share/fonts/opentype/urw-base35/NimbusSansNarrow-Regular.otf",
}
PATIENT = "DOE^JANE"
PATIENT_ID = "PID-4711-0815"
BIRTH = "1961-07-14"
US_IMAGE = "1.2.840.10008.5.1.4.1.1.6.1"
US_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.3.1"
SC_IMAGE = "1.2.840.10008.5.1.4.1.1.7"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"


def font(name: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(FONTS[name], size)


def ultrasound(width: int = 640, height: int = 480, seed: int = 0) -> np.ndarray:
    """A grey ultrasound-like frame: a sector of speckle on black."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    angle = np.arctan2(xx - width / 2, yy - height * 0.08)
    radius = np.hypot(xx - width / 2, yy - height * 0.08)
    sector = (np.abs(angle) < 0.6) & (radius > height * 0.06) & (radius < height * 0.86)
    frame = np.zeros((height, width), np.uint8)
    frame[sector] = np.clip(rng.rayleigh(38, (height, width))[sector], 0, 255)
    return frame


def paper(width: int = 640, height: int = 480, seed: int = 0) -> np.ndarray:
    """A scanned form: light grey paper with some noise."""
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(232, 6, (height, width)), 0, 255).astype(np.uint8)


def gradient(width: int = 640, height: int = 480) -> np.ndarray:
    """A smooth photograph-like background."""
    yy, xx = np.mgrid[0:height, 0:width]
    return (40 + 120 * (xx / width) * (0.5 + 0.5 * np.sin(yy / 40))).astype(np.uint8)


@dataclass
class Picture:
    """A frame (grey or RGB, 8-bit) with text drawn on it, and where."""

    pixels: np.ndarray
    text_mask: np.ndarray
    words: list[str] = field(default_factory=list)
    lines: list[tuple[int, int, int, int]] = field(default_factory=list)  # each text's box: x0, y0, x1, y1

    def draw(self, xy, text: str, size: int = 16, face: str = "sans", fill=255, identifying: bool = True) -> None:
        colour = fill if self.pixels.ndim == 3 or not isinstance(fill, tuple) else fill[0]
        if self.pixels.ndim == 3 and not isinstance(fill, tuple):
            colour = (fill, fill, fill)
        picture = Image.fromarray(self.pixels)
        ImageDraw.Draw(picture).text(xy, text, fill=colour, font=font(face, size))
        mask = Image.new("L", picture.size, 0)
        ImageDraw.Draw(mask).text(xy, text, fill=255, font=font(face, size))
        self.pixels = np.asarray(picture).copy()
        self.text_mask |= np.asarray(mask) > 96  # the strokes, not their faint anti-aliased edge
        self.lines.append(tuple(int(v) for v in ImageDraw.Draw(mask).textbbox(xy, text, font=font(face, size))))
        if identifying:
            self.words += [w for w in text.replace("^", " ").split() if len(w) > 2]


    def outside_lines(self, margin: int) -> np.ndarray:
        """Where no text was drawn: outside every text's box widened by ``margin``."""
        outside = np.ones(self.text_mask.shape, bool)
        for x0, y0, x1, y1 in self.lines:
            outside[max(y0 - margin, 0):y1 + margin, max(x0 - margin, 0):x1 + margin] = False
        return outside


def picture(background: np.ndarray, rgb: bool = False) -> Picture:
    pixels = np.stack([background] * 3, axis=-1) if rgb else background.copy()
    return Picture(pixels, np.zeros(background.shape, bool))


def burned_in(background: np.ndarray | None = None, rgb: bool = False, face: str = "sans", size: int = 16,
              fill=255) -> Picture:
    """A frame with a name, an ID and a birth date at the top and a label in the image."""
    p = picture(ultrasound() if background is None else background, rgb)
    p.draw((12, 10), f"{PATIENT}  {PATIENT_ID}", size, face, fill)
    p.draw((12, 14 + size * 1.4), f"DOB {BIRTH}", size, face, fill)
    p.draw((p.pixels.shape[1] - 14 * size, p.pixels.shape[0] - 2 * size), "ST MARY HOSPITAL", size, face, fill)
    return p


def dataset(frames: list[np.ndarray], sop_class: str = US_IMAGE, photometric: str | None = None,
            syntax=ExplicitVRLittleEndian, **attributes) -> Dataset:
    """A Part 10 dataset of these frames (native, or JPEG Baseline encoded by Pillow)."""
    first = frames[0]
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = PATIENT, PATIENT_ID, BIRTH.replace("-", "")
    ds.Modality = {US_IMAGE: "US", US_MULTIFRAME: "US", SC_IMAGE: "OT", CT_IMAGE: "CT"}.get(sop_class, "OT")
    ds.Rows, ds.Columns = first.shape[:2]
    ds.SamplesPerPixel = 3 if first.ndim == 3 else 1
    ds.PhotometricInterpretation = photometric or ("RGB" if first.ndim == 3 else "MONOCHROME2")
    if first.ndim == 3:
        ds.PlanarConfiguration = 0
    bits = first.dtype.itemsize * 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, bits, bits - 1
    ds.PixelRepresentation = 1 if first.dtype.kind == "i" else 0
    if len(frames) > 1:
        ds.NumberOfFrames = len(frames)
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    if syntax == JPEGBaseline8Bit:
        ds.PixelData = encapsulate([jpeg(f) for f in frames])
        ds["PixelData"].VR = "OB"
        if first.ndim == 3:
            ds.PhotometricInterpretation = photometric or "YBR_FULL_422"
        ds.LossyImageCompression = "01"
    else:
        ds.PixelData = b"".join(np.ascontiguousarray(f).tobytes() for f in frames)
        ds["PixelData"].VR = "OW" if bits > 8 else "OB"
    return ds


def jpeg(frame: np.ndarray, quality: int = 92) -> bytes:
    out = io.BytesIO()
    Image.fromarray(frame).save(out, "JPEG", quality=quality)
    return out.getvalue()


def encode(ds: Dataset) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def read_words(pixels: np.ndarray, lines: list[tuple[int, int, int, int]] | None = None) -> str:
    """What Tesseract reads in a frame, upper case, for the identifying words to be looked
    for: in each of ``lines`` widened by its height (where the text was drawn; elsewhere the
    tests check the pixels are unchanged), or the whole frame; as it is and twice its size
    (small text reads better), and inverted (light text on dark)."""
    from tesserocr import PSM, PyTessBaseAPI

    image = Image.fromarray(pixels if pixels.dtype == np.uint8 else
                            ((pixels - pixels.min()) * (255.0 / max(1, int(pixels.max() - pixels.min())))).astype(
                                np.uint8)).convert("L")
    crops = [image]
    if lines:
        crops = []
        for x0, y0, x1, y1 in lines:
            pad = y1 - y0
            crops.append(image.crop((max(x0 - pad, 0), max(y0 - pad, 0), min(x1 + pad, image.width),
                                     min(y1 + pad, image.height))))
    texts = []
    with PyTessBaseAPI(psm=PSM.SPARSE_TEXT) as api:
        for crop in crops:
            inverted = Image.fromarray(255 - np.asarray(crop))
            for picture in (crop, inverted):
                for scale in (1, 2):
                    api.SetImage(picture.resize((picture.width * scale, picture.height * scale)) if scale > 1
                                 else picture)
                    texts.append(api.GetUTF8Text() or "")
    return " ".join(texts).upper()


def legible(words: list[str], pixels: np.ndarray, lines=None) -> list[str]:
    """The words of ``words`` that OCR reads in ``pixels`` (in ``lines`` only: read_words)."""
    text = read_words(pixels, lines).replace(" ", "")
    return [w for w in words if w.upper().replace("^", "") in text]


def cine(count: int = 40, moving: bool = False, rgb: bool = False, name_in: range = range(20, 25)) -> list[Picture]:
    """A 640x480 cine loop over changing speckle with fixed text, a clock that ticks every 10
    frames, a name in the frames ``name_in`` only and, if ``moving``, a caption that moves."""
    pictures = []
    for index in range(count):
        p = burned_in(ultrasound(seed=index), rgb=rgb)
        p.draw((500, 40), f"12:00:{index // 10:02d}", 16)
        if index in name_in:
            p.draw((300, 240), "SMITH^JOHN", 20)
        if moving:
            p.draw((40 + 8 * index, 420), "Acc 778899", 14)
        pictures.append(p)
    return pictures


_BACKGROUNDS: dict = {}  # cine_picture's backgrounds, made once per (index % 20, size)


def cine_picture(index: int, width: int = 800, height: int = 600) -> Picture:
    """Frame ``index`` of a long RGB ultrasound cine (smooth speckle, as probes show it), with
    the patient's name, ID and birth date, a clock that ticks every 100 frames, and a name that
    shows in frames 500 to 509 only. The same index always makes the same frame."""
    key = (index % 20, width, height)
    if key not in _BACKGROUNDS:
        speckle = Image.fromarray(ultrasound(width, height, seed=index % 20))
        _BACKGROUNDS[key] = np.asarray(speckle.filter(ImageFilter.GaussianBlur(0.8)))
    p = burned_in(_BACKGROUNDS[key], rgb=True)
    p.draw((width - 120, 40), f"12:{index // 100:02d}:00", 16)
    if 500 <= index < 510:
        p.draw((width // 2 - 60, height // 2), "SMITH^JOHN", 20)
    return p


def write_cine(path, frames: int = 1000, width: int = 800, height: int = 600) -> None:
    """A JPEG Baseline ultrasound cine of ``frames`` cine_picture frames, as a Part 10 file."""
    ds = dataset([np.zeros((height, width, 3), np.uint8)], US_MULTIFRAME)
    ds.NumberOfFrames = frames
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PhotometricInterpretation = "YBR_FULL_422"
    ds.LossyImageCompression = "01"
    ds.PixelData = encapsulate([jpeg(cine_picture(i, width, height).pixels, 90) for i in range(frames)])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
