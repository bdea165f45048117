"""Clean Pixel Data: burned-in text found by OCR and masked, judged by pixels and by reading
the output back with OCR; every pixel format and transfer syntax; images that need no
cleaning keep their pixel data byte for byte."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.pixels import convert_color_space
from pydicom.uid import (
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)

from coercion import Keys
from coercion.engine.deidentify import DeidentificationError, Deidentifier
from coercion.engine.pixels.cleaner import PixelCleaner
from coercion.engine.pixels.policy import RegionsError, load_regions
from coercion.engine.pixels.settings import PixelSettings
from coercion.engine.pixels.text import TextFinder

import pixelimages as pi
from factory import SECRET

URI = "deidentify:CleanPixelDataOption"
METHOD = (0x0012, 0x0064)


def deidentifier(uri: str = URI, **pixels) -> Deidentifier:
    return Deidentifier(uri, Keys(SECRET), pixels=PixelSettings(**pixels) if pixels else None)


def cleaned(ds_or_bytes, deid: Deidentifier | None = None) -> pydicom.Dataset:
    data = ds_or_bytes if isinstance(ds_or_bytes, bytes) else pi.encode(ds_or_bytes)
    return pydicom.dcmread(io.BytesIO((deid or DEFAULT).deidentify_bytes(data)))


DEFAULT = deidentifier()


def frames_of(ds: pydicom.Dataset) -> np.ndarray:
    """The frames as (frames, rows, columns[, samples]), colour as RGB."""
    array = ds.pixel_array
    single = 3 if ds.SamplesPerPixel == 3 else 2
    return array[None] if array.ndim == single else array


def changed(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    difference = before != after
    return difference.any(axis=-1) if difference.ndim == 3 else difference


def assert_masked(picture: pi.Picture, before: np.ndarray, after: np.ndarray, margin: int, other: float = 0.02):
    """Every pixel of the text changed; outside the text's lines (widened by ``margin``)
    hardly any."""
    difference = changed(before, after)
    assert difference[picture.text_mask].all(), f"{(~difference[picture.text_mask]).sum()} text pixels unchanged"
    assert difference[picture.outside_lines(margin)].mean() <= other


def codes(ds) -> set[str]:
    return {item.CodeValue for item in ds.get("DeidentificationMethodCodeSequence", [])}


# -- detection: fonts, sizes, shades, positions ----------------------------------------------

BACKGROUNDS = {  # background, the two shades text is drawn in on it
    "ultrasound": (pi.ultrasound, (255, 190)),
    "paper": (pi.paper, (0, 70)),
    "photo": (pi.gradient, (255, 230)),
}


@pytest.mark.parametrize("size", (10, 13, 20, 32))
@pytest.mark.parametrize("face", sorted(pi.FONTS))
@pytest.mark.parametrize("background", sorted(BACKGROUNDS))
def test_every_text_pixel_is_masked_and_little_else(background, face, size):
    make, shades = BACKGROUNDS[background]
    for shade in shades:
        picture = pi.burned_in(make(), face=face, size=size, fill=shade)
        out = cleaned(pi.dataset([picture.pixels]))
        assert_masked(picture, picture.pixels, out.pixel_array, max(3, size // 2))
        assert out.BurnedInAnnotation == "NO"


def test_text_anywhere_in_the_image_over_speckle_or_black():
    rng = np.random.default_rng(7)
    for seed in range(24):
        picture = pi.picture(pi.ultrasound(seed=seed))
        size = int(rng.choice([11, 14, 18, 24]))
        picture.draw((int(rng.integers(0, 470)), int(rng.integers(0, 445))), "1961-07-14", size,
                     str(rng.choice(sorted(pi.FONTS))), int(rng.choice([255, 200])))
        assert_masked(picture, picture.pixels, cleaned(pi.dataset([picture.pixels])).pixel_array, max(3, size // 3))


@pytest.mark.parametrize("face,size", [("sans", 16), ("serif", 14), ("mono", 20), ("sans-bold", 12)])
def test_no_identifying_word_is_legible_afterwards(face, size):
    picture = pi.burned_in(pi.ultrasound(seed=3), face=face, size=size)
    # The test means something only if OCR reads the words in the input (nearly all of them).
    assert len(pi.legible(picture.words, picture.pixels, picture.lines)) >= len(picture.words) - 1
    out = cleaned(pi.dataset([picture.pixels]))
    assert pi.legible(picture.words, out.pixel_array, picture.lines) == []


def test_colour_text_on_a_colour_photograph():
    background = np.stack([pi.gradient(), pi.gradient()[::-1], np.full((480, 640), 90, np.uint8)], axis=-1)
    picture = pi.Picture(background.copy(), np.zeros((480, 640), bool))
    picture.draw((20, 20), "DOE^JANE 1961-07-14", 18, "sans", (255, 255, 0))
    picture.draw((300, 400), "PID-4711-0815", 18, "sans", (0, 0, 255))
    out = cleaned(pi.dataset([picture.pixels], pi.SC_IMAGE))
    assert_masked(picture, picture.pixels, out.pixel_array, 6)


# -- which images ---------------------------------------------------------------------------

def test_images_that_need_no_cleaning_keep_their_pixel_data_byte_for_byte():
    picture = pi.burned_in()
    ct = pi.dataset([picture.pixels], pi.CT_IMAGE)
    out = cleaned(ct)
    assert out.PixelData == ct.PixelData
    assert "113101" not in codes(out) and "BurnedInAnnotation" not in out


def test_a_ct_that_declares_burned_in_text_is_cleaned():
    picture = pi.burned_in()
    out = cleaned(pi.dataset([picture.pixels], pi.CT_IMAGE, BurnedInAnnotation="YES"))
    assert_masked(picture, picture.pixels, out.pixel_array, 6)
    assert "113101" in codes(out) and out.BurnedInAnnotation == "NO"


def test_an_ultrasound_without_text_keeps_its_pixels():
    frame = pi.ultrasound(seed=5)
    ds = pi.dataset([frame])
    out = cleaned(ds)
    assert out.PixelData == ds.PixelData
    assert out.BurnedInAnnotation == "NO" and "113101" in codes(out)  # looked at, and found clean


def test_without_the_option_nothing_about_pixels_changes():
    picture = pi.burned_in()
    ds = pi.dataset([picture.pixels], BurnedInAnnotation="YES")
    out = cleaned(ds, deidentifier("deidentify:"))
    assert out.PixelData == ds.PixelData and out.BurnedInAnnotation == "YES"
    assert "113101" not in codes(out)


def test_the_method_codes_say_clean_pixel_data_with_the_others():
    out = cleaned(pi.dataset([pi.burned_in().pixels]))
    assert {"113100", "113101"} <= codes(out)
    assert out.PatientIdentityRemoved == "YES"


def test_clean_recognizable_visual_features_stays_refused():
    from coercion.engine.uri import URIError, parse_uri

    with pytest.raises(URIError, match="not supported"):
        parse_uri("deidentify:CleanPixelDataOption,CleanRecognizableVisualFeaturesOption")


# -- multi-frame ----------------------------------------------------------------------------

class CountingFinder(TextFinder):
    """Tesseract, counting the pictures it is given."""

    def __init__(self):
        super().__init__()
        self.pictures = 0
        self.area = 0  # pixels read, over all the pictures

    def lines(self, mask, within=None):
        self.pictures += 1
        self.area += within.w * within.h if within else mask[0].size
        return super().lines(mask, within)


def test_every_frame_of_a_cine_is_cleaned_and_text_that_stays_put_is_read_once():
    pictures = pi.cine()
    finder = CountingFinder()
    deid = deidentifier()
    deid._pixels = PixelCleaner(PixelSettings(), finder)
    out = frames_of(cleaned(pi.dataset([p.pixels for p in pictures], pi.US_MULTIFRAME), deid))
    assert out.shape[0] == len(pictures)
    for picture, frame in zip(pictures, out):
        assert_masked(picture, picture.pixels, frame, 6)
    # Read whole once; then again only where the foreground changed: the clock's three ticks,
    # the name coming and going, a speck of speckle here and there.
    assert finder.pictures <= len(pictures) // 4 and finder.area <= 2 * 640 * 480


@pytest.mark.parametrize("rgb", (False, True), ids=("grey", "colour"))
def test_moving_text_is_followed_frame_by_frame(rgb):
    pictures = pi.cine(24, moving=True, rgb=rgb)
    out = frames_of(cleaned(pi.dataset([p.pixels for p in pictures], pi.US_MULTIFRAME)))
    for picture, frame in zip(pictures, out):
        assert_masked(picture, picture.pixels, frame, 6)


@pytest.mark.parametrize("rgb", (False, True), ids=("grey", "colour"))
def test_a_jpeg_cine_is_cleaned_frame_by_frame(rgb):
    pictures = pi.cine(24, moving=True, rgb=rgb)
    ds = pi.dataset([p.pixels for p in pictures], pi.US_MULTIFRAME, syntax=JPEGBaseline8Bit)
    before = frames_of(pydicom.dcmread(io.BytesIO(pi.encode(ds))))
    out = cleaned(ds)
    assert out.file_meta.TransferSyntaxUID == JPEGBaseline8Bit and out.NumberOfFrames == 24
    for picture, was, frame in zip(pictures, before, frames_of(out)):
        assert_masked(picture, was, frame, 16)


def test_a_frame_whose_text_differs_from_the_one_before_is_not_missed():
    frames = [pi.ultrasound(seed=i) for i in range(12)]
    pictures = [pi.picture(f) for f in frames]
    pictures[7].draw((200, 200), "SMITH^JOHN", 18)  # one frame only, in the middle
    out = frames_of(cleaned(pi.dataset([p.pixels for p in pictures], pi.US_MULTIFRAME)))
    assert_masked(pictures[7], pictures[7].pixels, out[7], 6)
    for index in (6, 8):
        assert (out[index] == frames[index]).all()


# -- pixel formats --------------------------------------------------------------------------

def _frame16(picture: pi.Picture, signed: bool = False, bits: int = 12) -> np.ndarray:
    values = picture.pixels.astype(np.int32) * ((1 << bits) - 1) // 255
    return (values - (1 << (bits - 1))).astype(np.int16) if signed else values.astype(np.uint16)


def test_monochrome1_sixteen_bits():
    picture = pi.burned_in()
    frame = _frame16(picture)
    ds = pi.dataset([frame], photometric="MONOCHROME1", BitsStored=12, HighBit=11)
    out = cleaned(ds)
    assert out.PhotometricInterpretation == "MONOCHROME1" and out.BitsStored == 12
    assert_masked(picture, frame, out.pixel_array, 6)


def test_signed_sixteen_bits():
    picture = pi.burned_in(pi.paper(), fill=0)
    frame = _frame16(picture, signed=True)
    ds = pi.dataset([frame], BitsStored=12, HighBit=11)
    out = cleaned(ds)
    assert out.PixelRepresentation == 1
    assert_masked(picture, frame, out.pixel_array, 6)


@pytest.mark.parametrize("planar", (0, 1))
def test_rgb_in_either_planar_configuration(planar):
    picture = pi.burned_in(rgb=True)
    ds = pi.dataset([picture.pixels])
    if planar:
        ds.PlanarConfiguration = 1
        ds.PixelData = np.ascontiguousarray(picture.pixels.transpose(2, 0, 1)).tobytes()
    out = cleaned(ds)
    assert out.PlanarConfiguration == planar
    assert_masked(picture, picture.pixels, out.pixel_array, 6)


def test_native_ybr_full():
    picture = pi.burned_in(rgb=True)
    ybr = convert_color_space(picture.pixels, "RGB", "YBR_FULL")
    out = cleaned(pi.dataset([ybr], photometric="YBR_FULL"))
    assert out.PhotometricInterpretation == "YBR_FULL"
    assert_masked(picture, ybr, np.frombuffer(out.PixelData, np.uint8).reshape(ybr.shape), 6)  # as stored


def test_palette_colour_keeps_its_palette_and_fills_with_an_index_of_it():
    picture = pi.burned_in()
    ds = pi.dataset([picture.pixels], photometric="PALETTE COLOR")
    ramp = np.arange(256, dtype=np.uint16) * 257
    for colour, table in (("Red", ramp), ("Green", ramp[::-1].copy()), ("Blue", ramp)):
        setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [256, 0, 16])
        setattr(ds, f"{colour}PaletteColorLookupTableData", table.tobytes())
    out = cleaned(ds)
    assert out.PhotometricInterpretation == "PALETTE COLOR"
    assert out.RedPaletteColorLookupTableData == ds.RedPaletteColorLookupTableData
    assert_masked(picture, picture.pixels, out.pixel_array, 6)


# -- transfer syntaxes ----------------------------------------------------------------------

@pytest.mark.parametrize("rgb", (False, True), ids=("grey", "colour"))
def test_jpeg_baseline_is_masked_in_the_dct_domain(rgb):
    picture = pi.burned_in(rgb=rgb)
    ds = pi.dataset([picture.pixels], syntax=JPEGBaseline8Bit)
    before = pydicom.dcmread(io.BytesIO(pi.encode(ds))).pixel_array
    out = cleaned(ds)
    assert out.file_meta.TransferSyntaxUID == JPEGBaseline8Bit  # not compressed again
    assert out.PhotometricInterpretation == ds.PhotometricInterpretation
    assert out.LossyImageCompression == "01"
    # The masks are whole blocks (MCUs of 8 or 16 pixels); every other block decodes as before.
    assert_masked(picture, before, out.pixel_array, 16)


def _dcmcjpeg(ds: pydicom.Dataset, tmp_path: Path, *options) -> bytes:
    source, target = tmp_path / "native.dcm", tmp_path / "jpeg.dcm"
    source.write_bytes(pi.encode(ds))
    subprocess.run(["dcmcjpeg", *options, str(source), str(target)], check=True, capture_output=True)
    return target.read_bytes()


def test_jpeg_lossless_is_written_back_losslessly(tmp_path):
    picture = pi.burned_in()
    data = _dcmcjpeg(pi.dataset([picture.pixels]), tmp_path, "+e1")
    assert pydicom.dcmread(io.BytesIO(data)).file_meta.TransferSyntaxUID == JPEGLosslessSV1
    out = cleaned(data)
    assert out.file_meta.TransferSyntaxUID == JPEGLSLossless
    assert "LossyImageCompression" not in out or out.LossyImageCompression == "00"
    assert_masked(picture, picture.pixels, out.pixel_array, 6)


def test_twelve_bit_jpeg_keeps_its_lossy_history(tmp_path):
    picture = pi.burned_in()
    data = _dcmcjpeg(pi.dataset([_frame16(picture)], BitsStored=12, HighBit=11), tmp_path, "+ee")
    source = pydicom.dcmread(io.BytesIO(data))
    assert source.file_meta.TransferSyntaxUID == JPEGExtended12Bit
    out = cleaned(data)
    assert out.file_meta.TransferSyntaxUID == JPEGLSLossless  # decoded, masked, never lossy again
    assert out.LossyImageCompression == "01"
    assert_masked(picture, source.pixel_array, out.pixel_array, 6)


@pytest.mark.parametrize("syntax", (RLELossless, JPEGLSLossless, JPEG2000Lossless), ids=lambda s: s.name)
@pytest.mark.parametrize("rgb", (False, True), ids=("grey", "colour"))
def test_lossless_syntaxes_stay_as_they_were(syntax, rgb):
    pictures = [pi.burned_in(pi.ultrasound(seed=i), rgb=rgb) for i in range(3)]
    ds = pi.dataset([p.pixels for p in pictures], pi.US_MULTIFRAME)
    ds.compress(syntax, **({"use_mct": False} if syntax == JPEG2000Lossless else {}))
    out = cleaned(ds)
    assert out.file_meta.TransferSyntaxUID == syntax
    assert out.PhotometricInterpretation == ("RGB" if rgb else "MONOCHROME2")
    for picture, frame in zip(pictures, frames_of(out)):
        assert_masked(picture, picture.pixels, frame, 6)


def test_jpeg_cine_frames_without_text_are_kept_as_they_were():
    frames = [pi.ultrasound(seed=i) for i in range(4)]
    picture = pi.burned_in(frames[2].copy())
    frames[2] = picture.pixels
    ds = pi.dataset(frames, pi.US_MULTIFRAME, syntax=JPEGBaseline8Bit)
    out = cleaned(ds)
    from pydicom.encaps import generate_frames

    before = list(generate_frames(ds.PixelData, number_of_frames=4))
    after = list(generate_frames(out.PixelData, number_of_frames=4))
    assert [a == b for a, b in zip(before, after)] == [True, True, False, True]


# -- identifying text only ------------------------------------------------------------------

def test_identifying_mode_masks_names_ids_and_dates_and_keeps_measurements():
    picture = pi.picture(pi.ultrasound(seed=2))
    picture.draw((12, 10), f"{pi.PATIENT}  {pi.PATIENT_ID}", 18)
    picture.draw((12, 40), pi.BIRTH, 18)
    measurement = pi.picture(picture.pixels)
    measurement.draw((400, 420), "DIST 4.52 cm", 18, identifying=False)
    ds = pi.dataset([measurement.pixels])
    out = cleaned(ds, deidentifier(text="identifying")).pixel_array
    assert pi.legible(["DOE", "JANE", "4711", "1961"], out, picture.lines) == []
    assert_masked(picture, measurement.pixels, out, 9)
    kept = ~measurement.outside_lines(4)
    assert (out[kept] == measurement.pixels[kept]).all()  # the measurement stays
    assert "DIST" in pi.read_words(out, measurement.lines)


# -- the site's regions ---------------------------------------------------------------------

REGIONS = """\
- name: acme-console
  match:
    Manufacturer: "ACME.*"
    Rows: 480
  regions:
    - [0, 0, 640, 60]
"""


def test_a_signature_masks_its_regions_without_ocr(tmp_path):
    (tmp_path / "pixel-regions.yaml").write_text(REGIONS)
    regions = load_regions(tmp_path / "pixel-regions.yaml")
    picture = pi.burned_in()
    finder = CountingFinder()
    deid = deidentifier()
    deid._pixels = PixelCleaner(PixelSettings(regions=regions), finder)
    out = cleaned(pi.dataset([picture.pixels], pi.CT_IMAGE, Manufacturer="Acme Medical"), deid)
    assert (out.pixel_array[:60] != picture.pixels[:60]).any() and finder.pictures == 0
    assert (out.pixel_array[62:] == picture.pixels[62:]).all()  # the hospital's name, lower, is not in a region
    other = cleaned(pi.dataset([picture.pixels], pi.CT_IMAGE, Manufacturer="Other"), deid)
    assert (other.pixel_array == picture.pixels).all()


@pytest.mark.parametrize("text,error", [
    ("- name: a\n  match: {Manufacturer: x}\n  regions: [[0, 0, 10]]\n", r"signature 'a': field 'regions', region 1"),
    ("- name: a\n  match: {NoSuchKeyword: x}\n  regions: [[0, 0, 1, 1]]\n", r"'NoSuchKeyword' is not a DICOM"),
    ("- name: a\n  match: {Manufacturer: '('}\n  regions: [[0, 0, 1, 1]]\n", r"invalid regular expression"),
    ("- name: a\n  match: {Rows: 1}\n  regions: [[0, 0, 1, 1]]\n  ocr: maybe\n", r"field 'ocr'"),
    ("- match: {Rows: 1}\n", r"entry 1: field 'name'"),
    ("- name: a\n  colour: red\n", r"entry 1: unknown field\(s\) colour"),
    ("[unclosed\n", r"not valid YAML at line"),
])
def test_a_bad_regions_file_names_the_file_entry_and_field(tmp_path, text, error):
    path = tmp_path / "pixel-regions.yaml"
    path.write_text(text)
    with pytest.raises(RegionsError, match=error) as raised:
        load_regions(path)
    assert str(path) in str(raised.value)


# -- fail closed ----------------------------------------------------------------------------

def test_an_image_that_cannot_be_decoded_is_refused_with_the_reason():
    ds = pi.dataset([pi.burned_in().pixels], syntax=JPEGBaseline8Bit)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2: no decoder
    with pytest.raises(DeidentificationError, match=r"pixel data cannot be cleaned \(a kind of image that usually "
                                                    r"carries burned-in text\).*MPEG2"):
        DEFAULT.deidentify_bytes(pi.encode(ds))


def test_a_broken_frame_in_the_middle_refuses_the_whole_image():
    frames = [pi.ultrasound(seed=i) for i in range(5)]
    ds = pi.dataset(frames, pi.US_MULTIFRAME)
    ds.compress(RLELossless)
    from pydicom.encaps import encapsulate, generate_frames

    items = list(generate_frames(ds.PixelData, number_of_frames=5))
    items[3] = b"\x01\x00\x00\x00" + b"\xff" * 60  # an RLE header that lies
    ds.PixelData = encapsulate(items)
    with pytest.raises(DeidentificationError, match="pixel data cannot be cleaned"):
        DEFAULT.deidentify_bytes(pi.encode(ds))


def test_the_cli_cleans_and_refuses_without_writing(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    picture = pi.burned_in()
    (inputs / "us.dcm").write_bytes(pi.encode(pi.dataset([picture.pixels])))
    broken = pi.dataset([picture.pixels], syntax=JPEGBaseline8Bit)
    broken.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"
    (inputs / "mpeg.dcm").write_bytes(pi.encode(broken))
    secret = tmp_path / "site.key"
    secret.write_bytes(SECRET)
    secret.chmod(0o600)
    result = subprocess.run([sys.executable, "-m", "coercion.cli", "deidentify", "--uri", URI, "--secret-file",
                             str(secret), "--out", str(tmp_path / "out"), "--quiet", str(inputs)],
                            capture_output=True, text=True)
    assert result.returncode == 1, result.stderr
    assert "mpeg.dcm" in result.stderr and "pixel data cannot be cleaned" in result.stderr
    assert sorted(p.name for p in (tmp_path / "out").rglob("*.dcm")) == ["us.dcm"]
    out = pydicom.dcmread(tmp_path / "out" / "us.dcm")
    assert_masked(picture, picture.pixels, out.pixel_array, 6)


def test_the_cli_cleans_a_thousand_frame_rgb_cine_in_bounded_memory(tmp_path):
    from pydicom.pixels import iter_pixels

    source = tmp_path / "in" / "cine.dcm"
    source.parent.mkdir()
    pi.write_cine(source)
    secret = tmp_path / "site.key"
    secret.write_bytes(SECRET)
    secret.chmod(0o600)
    command = [sys.executable, "-m", "coercion.cli", "deidentify", "--uri", URI, "--secret-file", str(secret),
               "--out", str(tmp_path / "out"), "--quiet", str(source)]
    # A process of its own measures the peak of its only child, the CLI.
    measure = ("import resource, subprocess, sys; status = subprocess.run(sys.argv[1:]).returncode; "
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(status)")
    result = subprocess.run([sys.executable, "-c", measure, *command], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    peak_mb = int(result.stdout.split()[-1]) / 1024
    assert peak_mb < 500, f"the CLI's peak was {peak_mb:.0f} MB"
    out = tmp_path / "out" / "cine.dcm"
    assert pydicom.dcmread(out, stop_before_pixels=True).NumberOfFrames == 1000
    for index, (was, frame) in enumerate(zip(iter_pixels(source), iter_pixels(out))):
        if index % 99 == 0 or 500 <= index < 510:
            assert changed(was, frame)[pi.cine_picture(index).text_mask].all(), index


# -- rules ----------------------------------------------------------------------------------

def test_rules_carry_their_pixel_text_and_the_folders_regions(tmp_path):
    from coercion.rules import load_rules

    (tmp_path / "rules.yaml").write_text(
        "- {name: probes, dimse: C_STORE_RQ, role: SCU, uri: 'deidentify:CleanPixelDataOption', "
        "pixel-text: identifying}\n- {name: plain, dimse: C_STORE_RQ, role: SCU, sending-aet: X, uri: 'deidentify:'}\n")
    (tmp_path / "pixel-regions.yaml").write_text(REGIONS)
    ruleset = load_rules(tmp_path)
    probes, plain = ruleset.rules
    assert probes.pixels.text == "identifying" and probes.pixels.regions.signatures[0].name == "acme-console"
    assert plain.pixels is None
    assert str(tmp_path / "pixel-regions.yaml") in ruleset.files


@pytest.mark.parametrize("rule,error", [
    ("{name: r, dimse: C_STORE_RQ, role: SCU, uri: 'deidentify:', pixel-text: all}", "field 'pixel-text'"),
    ("{name: r, dimse: C_STORE_RQ, role: SCU, uri: 'deidentify:CleanPixelDataOption', pixel-text: some}",
     "field 'pixel-text'"),
])
def test_a_bad_pixel_text_names_the_rule_and_field(tmp_path, rule, error):
    from coercion.rules import RuleError, load_rules

    (tmp_path / "rules.yaml").write_text(f"- {rule}\n")
    with pytest.raises(RuleError, match=f"rule 'r': {error}"):
        load_rules(tmp_path)


def test_a_bad_regions_file_stops_the_rules_from_loading(tmp_path):
    from coercion.rules import RuleError, load_rules

    (tmp_path / "rules.yaml").write_text("- {name: r, dimse: C_STORE_RQ, role: SCU, uri: 'deidentify:'}\n")
    (tmp_path / "pixel-regions.yaml").write_text("- name: a\n  match: {Rows: 1}\n  regions: [[0, 0, 0, 5]]\n")
    with pytest.raises(RuleError, match=r"pixel-regions.yaml: signature 'a': field 'regions', region 1"):
        load_rules(tmp_path)
