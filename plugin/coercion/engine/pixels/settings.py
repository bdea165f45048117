"""How Clean Pixel Data cleans, as a rule sets it (light: no numpy, no Tesseract)."""

from __future__ import annotations

from dataclasses import dataclass

from .policy import NO_REGIONS, SiteRegions

TEXT_MODES = ("all", "identifying")


@dataclass(frozen=True)
class PixelSettings:
    """How Clean Pixel Data cleans: ``text`` "all" (every text region) or "identifying"
    (only text that identifies); ``regions``: the site's signatures."""

    text: str = "all"
    regions: SiteRegions = NO_REGIONS

    def __post_init__(self) -> None:
        if self.text not in TEXT_MODES:
            raise ValueError(f"pixel text must be one of {', '.join(TEXT_MODES)}, got {self.text!r}")
