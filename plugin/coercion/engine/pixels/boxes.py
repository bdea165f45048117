"""Rectangles of an image, in pixels (no numpy: the rules and the regions file use them)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Box:
    """A rectangle of the image, in pixels: left, top, width, height."""

    x: int
    y: int
    w: int
    h: int

    def padded(self, pad: int, width: int, height: int, pad_y: int | None = None) -> "Box":
        """Wider by ``pad`` on each side (taller by ``pad_y``, ``pad`` unless given), within
        an image of ``width`` x ``height``."""
        pad_y = pad if pad_y is None else pad_y
        x0, y0 = max(self.x - pad, 0), max(self.y - pad_y, 0)
        x1, y1 = min(self.x + self.w + pad, width), min(self.y + self.h + pad_y, height)
        return Box(x0, y0, x1 - x0, y1 - y0)

    def meets(self, other: "Box") -> bool:
        return (self.x < other.x + other.w and other.x < self.x + self.w
                and self.y < other.y + other.h and other.y < self.y + self.h)

    def inside(self, other: "Box") -> bool:
        return (other.x <= self.x and other.y <= self.y and self.x + self.w <= other.x + other.w
                and self.y + self.h <= other.y + other.h)

    def as_tuple(self) -> tuple[int, int, int, int]:
        return self.x, self.y, self.w, self.h

    def union(self, other: "Box") -> "Box":
        x0, y0 = min(self.x, other.x), min(self.y, other.y)
        x1, y1 = max(self.x + self.w, other.x + other.w), max(self.y + self.h, other.y + other.h)
        return Box(x0, y0, x1 - x0, y1 - y0)


def joined_lines(boxes: list[Box], gap: float = 4.0) -> list[Box]:
    """Boxes of one line of text joined: side by side (overlapping by half the lower one's
    height), of like heights, no further apart than ``gap`` times the taller one's height.
    OCR splits a line where a glyph is faint or thin; what lies between its pieces is text."""
    boxes = sorted(boxes, key=lambda b: (b.x, b.y))
    merged = True
    while merged:
        merged = False
        out: list[Box] = []
        for box in boxes:
            for i, line in enumerate(out):
                low, high = min(box.h, line.h), max(box.h, line.h)
                overlap = min(box.y + box.h, line.y + line.h) - max(box.y, line.y)
                apart = max(box.x - (line.x + line.w), line.x - (box.x + box.w))
                if high <= 2 * low and overlap * 2 >= low and apart <= gap * high:
                    out[i] = line.union(box)
                    merged = True
                    break
            else:
                out.append(box)
        boxes = out
    return boxes


def outermost(boxes: list[Box]) -> list[Box]:
    """The boxes that lie inside no other (masking them masks the others)."""
    unique = list(dict.fromkeys(boxes))
    return [b for b in unique if not any(o is not b and b.inside(o) for o in unique)]
