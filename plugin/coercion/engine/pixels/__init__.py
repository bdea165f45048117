"""Clean Pixel Data (PS3.15 E.3.1): burned-in text found and masked in every frame.

``policy`` (which images are cleaned; the site's regions by header signature), ``settings``
(how a rule cleans), ``text`` (Tesseract finding the text), ``identifying`` (which words
identify, when only those are masked), ``frames`` (pixel data frame by frame, decoded and
written back losslessly), ``jpegmask`` (JPEG masked in the DCT domain, without re-encoding),
``cleaner`` (the PixelCleaner that puts them together), ``boxes`` (rectangles).

Part of the engine: may import the standard library, pydicom, numpy, scipy, Pillow, tesserocr,
PyYAML (the regions file) and the engine; the heavy ones only when an image is cleaned.
"""
