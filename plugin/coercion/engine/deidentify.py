"""The de-identifier: PS3.15 Annex E applied to a dataset, a byte string or a file.

    >>> from coercion import Deidentifier, Keys
    >>> deid = Deidentifier.from_uri("deidentify:RetainPatientIDHashOption", Keys(secret))
    >>> coerced = deid.deidentify_bytes(received)          # bytes in, bytes out
    >>> deid.deidentify_file("in.dcm", "out.dcm")          # file in, file out

Every attribute of every dataset, at any depth of sequences, gets the action that the
resolved profile gives its tag. The walk is here; each kind of value has its own element
anonymizer (uids, dates, identity, text, structured, private) and method states what was
done. Pixel data is never parsed (see dicomio), unless CleanPixelDataOption cleans an image
(see pixels): then it is cleaned frame by frame as the output is written.
"""

from __future__ import annotations

import mmap
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import Tag

from .context import InstanceContext, Scope
from .dates import DateShifter
from .dicomio import Chunk, Chunks, DicomError, Instance, StreamedPixels, joined, read_instance, write_instance
from .identity import DummyValues, PatientIDHasher
from .method import STATED, MethodStatement
from .private import SafePrivateBlocks, private_creators
from .profile import (
    CLEAN_GRAPHICS,
    CLEAN_STRUCTURED,
    CLEAN_TEXT,
    DUMMY,
    DUMMY_ITEMS,
    DUMMY_SUBTREES,
    EMPTY,
    KEEP,
    PATIENT_ID_HASH,
    REFUSE_DIRECTORY,
    REMOVE,
    SAFE_PRIVATE,
    SHIFT_DATES,
    UID,
    VALUE_DEPENDENT,
    Profile,
    nested_subtree,
    resolve_profile,
)
from .pseudonyms import Keys
from .record import Record, tag_text
from .structured import without_context
from .text import TextCleaner, clean_unlisted
from .uids import UIDReplacer, query_uids, replaced_uids
from .tags import PATIENT_ID, SOP_INSTANCE_UID
from .uri import DeidentifyURI, Option, parse_uri
from .values import DUMMY_BYTES, text_of, vr_of

if TYPE_CHECKING:
    from .clean import Identifiers
    from .pixels.cleaner import CleanPlan, PixelCleaner
    from .pixels.settings import PixelSettings

MEDIA_STORAGE_SOP_CLASS_UID = 0x00020002
MEDIA_STORAGE_DIRECTORY_STORAGE = "1.2.840.10008.1.3.10"  # a DICOMDIR
# The content trees whose observation context items go (structured.without_context).
_WITHOUT_CONTEXT = frozenset({CLEAN_STRUCTURED, DUMMY_ITEMS})
# The options whose cleaning removes the instance's identifying values from text.
_CLEANING_OPTIONS = frozenset({
    Option.CleanDescriptorsOption, Option.CleanStructuredContentOption, Option.CleanGraphicsOption,
    Option.RetainPatientCharacteristicsOption, Option.RetainDeviceIdentityOption,
})
# What carries out an action on one attribute: (dataset, tag, keyword if listed, scope).
Handler = Callable[[Dataset, int, "str | None", Scope], None]


class DeidentificationError(RuntimeError):
    """De-identification of one instance failed; nothing must be stored or sent."""


@dataclass(frozen=True)
class Outcome:
    """What was done to one instance. ``original_patient_id`` is PHI: never log it."""

    sop_class_uid: str
    sop_instance_uid: str
    patient_pseudonym: str | None
    original_patient_id: str | None
    issuer_of_patient_id: str
    # (original, pseudonym) of the Study, Series and SOP Instance UIDs that were replaced:
    # what a peer may query by later (the linkage store keeps them, keyed hashes cannot be inverted)
    uids: tuple[tuple[str, str], ...] = ()

    def __repr__(self) -> str:  # keep PHI out of logs and tracebacks
        return (f"Outcome(sop_class_uid={self.sop_class_uid!r}, "
                f"sop_instance_uid={self.sop_instance_uid!r}, "
                f"patient_pseudonym={self.patient_pseudonym!r})")


def _pixel_failure(plan: CleanPlan, exc: Exception) -> "DeidentificationError":
    return DeidentificationError(f"the pixel data cannot be cleaned ({plan.reason}): {exc}")


def _failing_as_deidentification(chunks: Iterable[Chunk], plan: CleanPlan) -> Iterator[Chunk]:
    from .pixels.frames import PixelError

    try:
        yield from chunks
    except PixelError as exc:
        raise _pixel_failure(plan, exc) from None


class Deidentifier:
    """Applies one ``deidentify:`` URI with one set of keys; reusable and thread-safe."""

    def __init__(self, uri: DeidentifyURI | str, keys: Keys, tables: str | None = None,
                 pixels: PixelSettings | None = None) -> None:
        """``pixels``: the PixelSettings of CleanPixelDataOption (pixels.PixelSettings; the
        defaults when None)."""
        self.uri = parse_uri(uri) if isinstance(uri, str) else uri
        self.keys = keys
        self.profile: Profile = resolve_profile(self.uri, tables)
        self._needs_identifiers = bool(self.uri.options & _CLEANING_OPTIONS)
        self.method = MethodStatement(self.uri, self.profile, keys)
        # The element anonymizers, by the action they carry out (KEEP and REMOVE are the walk's).
        self.dummy = DummyValues(keys, self, self.uri.options)
        self._actions: dict[str, Handler] = {
            REFUSE_DIRECTORY: _refuse_directory,
            DUMMY: self.dummy,
            EMPTY: _empty,
            UID: UIDReplacer(keys, self),
            PATIENT_ID_HASH: PatientIDHasher(keys),
            SHIFT_DATES: DateShifter(self),
            **{action: TextCleaner(action, self) for action in (CLEAN_TEXT, CLEAN_STRUCTURED, CLEAN_GRAPHICS)},
        }
        keeps_safe = self.profile.private_action == SAFE_PRIVATE
        self._private = SafePrivateBlocks(self.profile.tables.safe_private, self) if keeps_safe else None
        self._pixels: PixelCleaner | None = None
        if Option.CleanPixelDataOption in self.uri:
            from .pixels.cleaner import PixelCleaner  # numpy, Tesseract: only when asked for

            self._pixels = PixelCleaner(pixels)

    @classmethod
    def from_uri(cls, uri: str, keys: Keys, tables: str | None = None,
                 pixels: PixelSettings | None = None) -> "Deidentifier":
        return cls(parse_uri(uri), keys, tables, pixels)

    # -- public API -------------------------------------------------------------------------

    def deidentify_bytes(self, data: bytes | bytearray | memoryview) -> bytes:
        chunks, _ = self.deidentify_chunks(data)
        return joined(chunks)

    def deidentify_chunks(self, data: bytes | bytearray | memoryview) -> tuple[Chunks, Outcome]:
        """The de-identified instance as byte chunks (to write without joining) and the outcome."""
        instance = read_instance(data, drop_private=self.removes_private)
        outcome = self.deidentify_instance(instance)
        return self.encode(instance), outcome

    def deidentify_recorded(self, data: bytes | bytearray | memoryview) -> tuple[Chunks, Outcome, Record]:
        """:meth:`deidentify_chunks`, with the walk's record of every decision it took (record.py):
        what the preview explains. The same output; private attributes are read to be recorded."""
        record = Record(self.profile)
        instance = read_instance(data, drop_private=False)
        outcome = self.deidentify_instance(instance, record)
        return self.encode(instance), outcome, record

    def deidentify_file(self, src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> Outcome:
        """Read ``src``, write the result to ``dst`` atomically; ``src`` is never modified.

        The input is mapped into memory, not read into it, and what is written of it is let
        go as it is written: a file of any size is de-identified (and cleaned, frame by frame)
        in bounded memory."""
        dst = Path(dst)
        with open(src, "rb") as source:
            size = os.fstat(source.fileno()).st_size
            mapped = mmap.mmap(source.fileno(), 0, access=mmap.ACCESS_READ) if size else None
        try:
            chunks, outcome = self.deidentify_chunks(memoryview(mapped) if mapped is not None else b"")
            fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=".coercion-", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as fp:
                    _write_released(fp, chunks, mapped)
                os.replace(tmp, dst)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            finally:
                del chunks
        finally:
            if mapped is not None:
                try:
                    mapped.close()
                except BufferError:  # a view is still held (an exception's traceback): closed when freed
                    pass
        return outcome

    @property
    def removes_private(self) -> bool:
        """Whether every private attribute goes (they need not even be read)."""
        return self._private is None

    def deidentify_instance(self, instance: Instance, record: Record | None = None) -> Outcome:
        """De-identify ``instance`` in place (``record``: where the walk writes its decisions)."""
        if text_of(instance.file_meta, MEDIA_STORAGE_SOP_CLASS_UID) == MEDIA_STORAGE_DIRECTORY_STORAGE:
            _refuse_directory()
        plan = None
        if self._pixels is not None and len(instance.segments) > 1:  # it has pixel data
            plan = self._pixels.plan(instance.header, self._pixel_identifiers(instance.header))
        outcome = self._deidentify(instance.header, instance.datasets(), pixels_cleaned=plan is not None,
                                   record=record)
        if record is not None:
            for segment in instance.segments:
                if not isinstance(segment, Dataset):
                    record.pixel_data(tag_text(segment.tag), segment.tag, plan.reason if plan is not None else None)
        if plan is not None:
            from .pixels.frames import PixelError

            assert self._pixels is not None  # a plan is made by it
            try:
                self._pixels.apply(plan, instance)
            except PixelError as exc:  # fail closed: an image that should be cleaned and cannot be
                raise _pixel_failure(plan, exc) from None
            # Frames are cleaned as they are written: a frame that fails then fails the same way.
            for segment in instance.segments:
                if isinstance(segment, StreamedPixels):
                    segment.chunks = _failing_as_deidentification(segment.chunks, plan)
        return outcome

    def _pixel_identifiers(self, header: Dataset) -> Identifiers | None:
        assert self._pixels is not None  # asked for by it only
        if self._pixels.settings.text != "identifying":
            return None
        from .context import collect_identifiers

        return collect_identifiers(header)

    def deidentify_dataset(self, ds: Dataset) -> Outcome:
        """De-identify a dataset in place (a query, a worklist item, a decoded instance)."""
        meta = getattr(ds, "file_meta", None)
        if meta is not None and text_of(meta, MEDIA_STORAGE_SOP_CLASS_UID) == MEDIA_STORAGE_DIRECTORY_STORAGE:
            _refuse_directory()
        return self._deidentify(ds, [ds])

    def encode(self, instance: Instance) -> Chunks:
        """A de-identified instance as byte chunks, with its rebuilt file meta."""
        return write_instance(instance, self.method.file_meta(instance))

    def _deidentify(self, header: Dataset, datasets: list[Dataset], pixels_cleaned: bool = False,
                    record: Record | None = None) -> Outcome:
        context = InstanceContext(header, self.keys, self._needs_identifiers, self.profile.tables, record)
        before = query_uids(header)
        scope = Scope(context, top=True, types=context.types)
        for ds in datasets:
            self.walk(ds, scope)
        self.method.mark(header, context.overlays_removed, pixels_cleaned)
        if record is not None:
            for tag, what in STATED.items():
                record.method(tag_text(tag), tag, what)
        pseudonym = text_of(header, PATIENT_ID) if Option.RetainPatientIDHashOption in self.uri else ""
        return Outcome(
            sop_class_uid=context.sop_class_uid,
            sop_instance_uid=text_of(header, SOP_INSTANCE_UID),
            patient_pseudonym=pseudonym or None,
            original_patient_id=context.patient_id or None,
            issuer_of_patient_id=context.issuer,
            uids=replaced_uids(before, query_uids(header)),
        )

    # -- the walk ---------------------------------------------------------------------------

    def walk(self, ds: Dataset, scope: Scope) -> None:
        """Give every attribute of ``ds`` its action (items of sequences are walked in turn)."""
        profile = self.profile
        top = scope.top
        record = scope.instance.record  # None unless a record is asked for
        # At the top level the actions are those of the IOD's types, resolved once per IOD;
        # in an item each X, Z or compound code is resolved by the types of its place.
        by_tag = profile.top_level_actions(scope.types) if top else profile.by_tag
        removed_overlay_groups: set[int] = set()
        creators: dict[tuple[int, int], str] | None = None
        for tag in list(ds.keys()):
            group = tag >> 16
            if group & 1:
                if self._private is None:
                    if record is not None:
                        record.private(scope.path + tag_text(tag), tag, False, "")
                    del ds[tag]
                    continue
                if creators is None:
                    creators = private_creators(ds)
                self._private(ds, tag, creators, scope)
                continue
            entry = by_tag.get(tag)
            if entry is not None:
                action = entry[0] if top else self.valid_action(entry[0], tag, scope)
                if record is not None:
                    record.table(scope.path + tag_text(tag), tag, action, scope.types, top, scope.instance.animal)
                self.apply(ds, tag, action, entry[1], scope)
            elif 0x5000 <= group <= 0x501E:
                self.repeating(ds, tag, profile.curve_action, scope)
            elif 0x6000 <= group <= 0x601E:
                element = tag & 0xFFFF
                if element == 0x3000:
                    if profile.overlay_data_action == REMOVE:
                        removed_overlay_groups.add(group)
                    self.repeating(ds, tag, profile.overlay_data_action, scope)
                elif element == 0x4000:
                    self.repeating(ds, tag, profile.overlay_comments_action, scope)
                else:
                    self.keep(ds, tag, scope)
            else:
                self.keep(ds, tag, scope)
        if removed_overlay_groups:
            # An overlay plane without its data is broken, and its label or description
            # may carry text: the whole group goes.
            scope.instance.overlays_removed = True
            for tag in [t for t in ds.keys() if (t >> 16) in removed_overlay_groups]:
                if record is not None and tag & 0xFFFF != 0x3000:
                    record.overlay_plane(scope.path + tag_text(tag), tag)
                del ds[tag]
        if top:
            _drop_unconditioned(ds, record)

    def repeating(self, ds: Dataset, tag: int, action: str, scope: Scope) -> None:
        """A curve (50xx) or an overlay's data or comments (60xx): their rows' action."""
        if scope.instance.record is not None:
            scope.instance.record.repeating(scope.path + tag_text(tag), tag, action)
        self.apply(ds, tag, action, None, scope)

    def walk_items(self, elem: DataElement, scope: Scope) -> None:
        """Walk the items of a sequence in their ``scope`` (an SR content tree that is cleaned
        or replaced loses its observation context)."""
        record = scope.instance.record
        received = list(elem.value or [])
        items = without_context(elem) if scope.subtree in _WITHOUT_CONTEXT else received
        if record is None:
            for item in items:
                self.walk(item, scope)
            return
        walked = {id(item) for item in items}
        for index, item in enumerate(received):  # paths count the items received
            if id(item) in walked:
                self.walk(item, scope.item(index))
            else:
                record.context_item(f"{scope.path}[{index}]", elem.tag)

    def valid_action(self, action: str, tag: int, scope: Scope) -> str:
        """X, Z or a compound code: the action that the attribute's type at this place allows."""
        return self.profile.valid_action(action, tag, scope.types)

    def apply(self, ds: Dataset, tag: int, action: str, keyword: str | None, scope: Scope) -> None:
        """Carry out one action (already chosen for the attribute's type, see valid_action)."""
        if action == REMOVE:
            del ds[tag]
        elif action == KEEP:
            self.keep(ds, tag, scope, listed=True)
        else:
            handler = self._actions.get(action)
            if handler is None:
                raise DeidentificationError(f"no implementation for action {action!r} on {Tag(tag)}")
            handler(ds, tag, keyword, scope)

    def keep(self, ds: Dataset, tag: int, scope: Scope, listed: bool = False) -> None:
        """K (``listed``), or an attribute the table does not list: kept; its items walked;
        inside a C subtree its text cleaned, inside a D subtree its value replaced (unless a K
        of an option keeps it)."""
        vr = vr_of(ds, tag)
        subtree = scope.subtree
        record = scope.instance.record
        if vr == "SQ":
            if record is not None and not listed:
                path = scope.path + tag_text(tag)
                if subtree is None:
                    record.unlisted(path, tag, KEEP, None)
                else:
                    record.sequence_in_subtree(path, tag)
            self.walk_items(ds[tag], scope.items(nested_subtree(subtree), tag))
            return
        done = None
        if subtree:
            if subtree in DUMMY_SUBTREES:
                if not listed:
                    done = self.dummy.unlisted(ds, tag, vr, scope)
            else:
                done = clean_unlisted(ds, tag, vr, scope)
        if record is not None:
            path = scope.path + tag_text(tag)
            if not listed:
                record.unlisted(path, tag, done[0] if done else KEEP, subtree, done[1] if done else None)
            elif done is not None and done[0] != KEEP:
                record.cleaned_too(path, tag, done[0], done[1])

    def fallback(self, ds: Dataset, tag: int, keyword: str | None, scope: Scope, tried: str) -> None:
        """A C (``tried``) that cannot apply to this value (binary data, an unparseable date):
        the basic action."""
        action = self.valid_action(self._basic_action(tag), tag, scope)
        if scope.instance.record is not None:
            scope.instance.record.fell_back(scope.path + tag_text(tag), tag, action, tried)
        self.apply(ds, tag, action, keyword, scope)

    def _basic_action(self, tag: int) -> str:
        group = tag >> 16
        if 0x5000 <= group <= 0x501E or 0x6000 <= group <= 0x601E:
            return REMOVE
        wanted = f"({group:04X},{tag & 0xFFFF:04X})"
        for row in self.profile.tables.rows:  # rare path: only for values a C cannot clean
            if row.tag == wanted:
                return row.basic
        return REMOVE


_RELEASE_EVERY = 32 * 1024 * 1024


def _write_released(fp: BinaryIO, chunks: Iterable[Chunk], mapped: mmap.mmap | None) -> None:
    """Write ``chunks``, in pieces, and let the kernel take back the pages of ``mapped`` read
    so far every few tens of MB (they would otherwise count against the process until the end)."""
    since = 0
    for chunk in chunks:
        view = memoryview(chunk)
        for start in range(0, len(view), _RELEASE_EVERY):
            piece = view[start:start + _RELEASE_EVERY]
            fp.write(piece)
            since += len(piece)
            if mapped is not None and since >= _RELEASE_EVERY and hasattr(mmap, "MADV_DONTNEED"):
                fp.flush()
                mapped.madvise(mmap.MADV_DONTNEED)
                since = 0


def _refuse_directory(*_: object) -> None:
    """A DICOMDIR is the index of a file-set, not an instance: its directory records (names,
    IDs, Type 1 dates, File IDs) would be mangled by the profile. It is refused, known by its
    file meta or by its Directory Record Sequence (Type 2: every DICOMDIR has one; the profile
    maps that tag to this refusal); a file-set is given a new DICOMDIR built from its
    de-identified files (the command line does)."""
    raise DeidentificationError(
        "a DICOMDIR (Media Storage Directory Storage) is the directory of a file-set, not an "
        "instance: it is not de-identified; build a new one from the de-identified files")


def _drop_unconditioned(ds: Dataset, record: Record | None) -> None:
    """A Type 1C attribute whose condition went with another's value (profile.VALUE_DEPENDENT)
    is not allowed any more: it goes too (the Role of a Responsible Person removed or emptied)."""
    for tag, on in VALUE_DEPENDENT.items():
        if tag in ds and not text_of(ds, on):
            if record is not None:
                record.unconditioned(tag_text(tag), tag)
            del ds[tag]


def _empty(ds: Dataset, tag: int, keyword: str | None, scope: Scope) -> None:
    """Z: the attribute stays, empty."""
    vr = vr_of(ds, tag)
    ds[tag] = DataElement(tag, vr, Sequence() if vr == "SQ" else (b"" if vr in DUMMY_BYTES else None))


__all__ = ["Deidentifier", "DeidentificationError", "DicomError", "Outcome"]
