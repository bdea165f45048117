"""What was done, stated in the instance: Patient Identity Removed, the De-identification Method
and its Code Sequence (CID 7050), Longitudinal Temporal Information Modified, and the file meta
rebuilt from the dataset."""

from __future__ import annotations

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from pydicom.sequence import Sequence
from pydicom.tag import Tag

from .dicomio import Instance
from .implementation import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from .profile import Profile
from .pseudonyms import Keys
from .tags import SOP_CLASS_UID, SOP_INSTANCE_UID
from .uri import DeidentifyURI, Option
from .values import text_of, values_of

PATIENT_IDENTITY_REMOVED = 0x00120062
DEIDENTIFICATION_METHOD = 0x00120063
DEIDENTIFICATION_METHOD_CODE_SEQUENCE = 0x00120064
LONGITUDINAL_TEMPORAL_INFORMATION_MODIFIED = 0x00280303
# What each attribute the statement writes says (the walk's record gives it as the reason).
STATED = {
    PATIENT_IDENTITY_REMOVED: "Patient Identity Removed: YES, stated by the de-identifier (PS3.15 E.1.1)",
    DEIDENTIFICATION_METHOD: "De-identification Method: the profile and options applied, stated by the "
                             "de-identifier after what earlier de-identifications stated",
    DEIDENTIFICATION_METHOD_CODE_SEQUENCE: "De-identification Method Code Sequence: a CID 7050 code for the "
                                           "profile and each option applied, stated by the de-identifier",
    LONGITUDINAL_TEMPORAL_INFORMATION_MODIFIED: "Longitudinal Temporal Information Modified: REMOVED, MODIFIED "
                                                "or UNMODIFIED as the date options say, stated by the de-identifier",
}


class MethodStatement:
    """The attributes that say how an instance was de-identified, for one option set."""

    def __init__(self, uri: DeidentifyURI, profile: Profile, keys: Keys):
        self.uri = uri
        self.keys = keys
        cid = profile.tables.cid_7050
        names = ["BasicApplicationConfidentialityProfile"]
        # Clean Pixel Data is stated only on the images whose pixels were cleaned.
        names += [o.value for o in Option if o in uri.options and o.value in cid and o != Option.CleanPixelDataOption]
        self.codes = [cid[n] for n in names]
        self.texts = [c["meaning"] for c in self.codes]
        self.pixel_code = cid[Option.CleanPixelDataOption.value]
        if Option.RetainPatientIDHashOption in uri:
            self.texts.append("dcm4chee RetainPatientIDHashOption (keyed)")
        if Option.RetainLongitudinalTemporalInformationFullDatesOption in uri:
            self.longitudinal = "UNMODIFIED"
        elif Option.RetainLongitudinalTemporalInformationModifiedDatesOption in uri:
            self.longitudinal = "MODIFIED"
        else:
            self.longitudinal = "REMOVED"
        self._encoded_codes: dict[tuple[bool, bool, bool], bytes] = {}

    def code_items(self, pixels_cleaned: bool = False) -> list[Dataset]:
        items = []
        for code in self.codes + ([self.pixel_code] if pixels_cleaned else []):
            item = Dataset()
            item[0x00080100] = DataElement(0x00080100, "SH", code["value"])
            item[0x00080102] = DataElement(0x00080102, "SH", code["scheme"])
            item[0x00080104] = DataElement(0x00080104, "LO", code["meaning"])
            items.append(item)
        return items

    def _code_sequence(self, ds: Dataset, pixels_cleaned: bool = False) -> DataElement | RawDataElement:
        """De-identification Method Code Sequence, encoded once per encoding and reused.

        It is the same for every instance of an option set; a raw element with no source
        position (value_tell -1) is written as it is and parsed by pydicom if anyone reads it.
        """
        implicit, little = ds.original_encoding
        tag = DEIDENTIFICATION_METHOD_CODE_SEQUENCE
        if implicit is None:
            return DataElement(tag, "SQ", Sequence(self.code_items(pixels_cleaned)))
        assert little is not None  # original_encoding: both known, or neither
        key = (implicit, little, pixels_cleaned)
        value = self._encoded_codes.get(key)
        if value is None:
            out = DicomBytesIO()
            out.is_implicit_VR, out.is_little_endian = implicit, little
            write_data_element(out, DataElement(tag, "SQ", Sequence(self.code_items(pixels_cleaned))), ["iso8859"])
            value = out.getvalue()[8 if implicit else 12:]
            self._encoded_codes[key] = value
        return RawDataElement(Tag(tag), None if implicit else "SQ", len(value), value, -1, implicit, little)

    def mark(self, ds: Dataset, overlays_removed: bool, pixels_cleaned: bool = False) -> None:
        """State what was done, after what earlier de-identifications stated."""
        texts = self.texts
        if pixels_cleaned:
            texts = [*texts, self.pixel_code["meaning"]]
        if overlays_removed and Option.CleanGraphicsOption in self.uri:
            texts = [*texts, "Overlay bitmaps removed, not cleaned"]
        previous = ds.get(DEIDENTIFICATION_METHOD)
        previous_texts = [str(v) for v in values_of(previous.value)] if previous is not None else []
        previous_codes = ds.get(DEIDENTIFICATION_METHOD_CODE_SEQUENCE)
        if previous_codes is not None and previous_codes.value:
            items = list(previous_codes.value) + self.code_items(pixels_cleaned)
            ds[DEIDENTIFICATION_METHOD_CODE_SEQUENCE] = DataElement(DEIDENTIFICATION_METHOD_CODE_SEQUENCE, "SQ",
                                                                    Sequence(items))
        else:
            ds[DEIDENTIFICATION_METHOD_CODE_SEQUENCE] = self._code_sequence(ds, pixels_cleaned)
        ds[PATIENT_IDENTITY_REMOVED] = DataElement(PATIENT_IDENTITY_REMOVED, "CS", "YES")
        ds[DEIDENTIFICATION_METHOD] = DataElement(DEIDENTIFICATION_METHOD, "LO", previous_texts + list(texts))
        ds[LONGITUDINAL_TEMPORAL_INFORMATION_MODIFIED] = DataElement(
            LONGITUDINAL_TEMPORAL_INFORMATION_MODIFIED, "CS", self.longitudinal)

    def file_meta(self, instance: Instance) -> dict[int, str | bytes]:
        """The file meta of the output, rebuilt from the dataset (nothing of the old one is copied
        but the transfer syntax: source AE titles and private meta information go)."""
        header = instance.header
        old = instance.file_meta
        meta: dict[int, str | bytes] = {0x00020001: b"\x00\x01"}
        sop_class = text_of(header, SOP_CLASS_UID) or text_of(old, 0x00020002)
        if sop_class:
            meta[0x00020002] = sop_class
        instance_uid = text_of(header, SOP_INSTANCE_UID)
        if not instance_uid and text_of(old, 0x00020003):
            original = text_of(old, 0x00020003)
            instance_uid = original if Option.RetainUIDsOption in self.uri else self.keys.uid(original)
        if instance_uid:
            meta[0x00020003] = instance_uid
        meta[0x00020010] = str(instance.transfer_syntax)
        meta[0x00020012] = IMPLEMENTATION_CLASS_UID
        meta[0x00020013] = IMPLEMENTATION_VERSION_NAME
        return meta
