"""The engine: PS3.15 Annex E as data, and the de-identifier, bytes in and bytes out.

``uri`` (deidentify: URIs), ``profile`` (the standard's tables resolved into one action per
tag), ``pseudonyms`` (the keyed functions), ``sniff`` and ``dicomio`` (is it DICOM;
header-only reading, pixel data passed through), ``clean`` (descriptor rules),
``deidentify`` (the Deidentifier: the walk) composed of small element anonymizers
(``uids``, ``dates``, ``identity`` for dummies and the patient ID hash, ``text`` with the
descriptor rules of ``clean``, ``structured`` for SR content, ``private`` for safe private
blocks), ``method`` (what was done, stated in the instance), ``context`` and ``values``
(what they share), ``limits`` (how deep sequences may nest), ``implementation`` (the
version, the implementation UID), ``record`` (the walk's record of each decision it takes),
``explain`` (what a de-identification did to each attribute, and why: the preview's account
of that record); ``pixels`` (Clean Pixel Data: burned-in text found by
Tesseract and masked, frame by frame).

May import: the standard library, pydicom, and this subpackage only (``pixels`` also numpy, scipy,
Pillow, tesserocr and PyYAML); never ``orthanc``, never another layer of the package.
"""
