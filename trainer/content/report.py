"""What one ContentEmbedder run did: counts per modality, the bad images by item id, and the
encoders' time. Batches report on their own and are merged, so no step holds the catalog."""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Mapping

# The report lists this many bad images (the first by item id); `bad_images` counts them all,
# and every one is also logged by the worker that found it.
MAX_LISTED_BAD_IMAGES = 1000


@dataclasses.dataclass(frozen=True, order=True)
class BadImage:
  item_id: str
  image_uri: str
  error: str


@dataclasses.dataclass
class ContentReport:
  """Counts of one batch or of the whole run; `add` merges another report into this one."""
  items: int = 0
  with_text: int = 0
  with_image_uri: int = 0
  with_image: int = 0
  bad_images: int = 0
  listed_bad_images: List[BadImage] = dataclasses.field(default_factory=list)
  text_seconds: float = 0.0   # in the text encoder, summed over workers
  image_seconds: float = 0.0  # reading, decoding and encoding images, summed over workers

  def add(self, other: "ContentReport") -> "ContentReport":
    for field in ("items", "with_text", "with_image_uri", "with_image", "bad_images",
                  "text_seconds", "image_seconds"):
      setattr(self, field, getattr(self, field) + getattr(other, field))
    self.listed_bad_images = sorted(self.listed_bad_images + other.listed_bad_images
                                    )[:MAX_LISTED_BAD_IMAGES]
    return self

  def to_json(self) -> Dict[str, Any]:
    rate = lambda n, seconds: round(n / seconds, 1) if seconds else None  # noqa: E731
    return {
        "items": self.items, "with_text": self.with_text,
        "with_image_uri": self.with_image_uri, "with_image": self.with_image,
        "bad_images": self.bad_images,
        "bad_image_list": [dataclasses.asdict(bad) for bad in self.listed_bad_images],
        "bad_image_list_complete": len(self.listed_bad_images) == self.bad_images,
        "seconds": {"text": round(self.text_seconds, 3), "image": round(self.image_seconds, 3)},
        "items_per_second": {"text": rate(self.with_text, self.text_seconds),
                             "image": rate(self.with_image_uri, self.image_seconds)}}


def summary(report: Mapping[str, Any]) -> str:
  """One log line from a report's JSON: the counts and every listed bad image."""
  bad = "; ".join(f"{b['item_id']} ({b['image_uri']}: {b['error']})"
                  for b in report["bad_image_list"])
  return (f"{report['items']} items, {report['with_text']} with text, {report['with_image']} "
          f"with an image, {report['bad_images']} bad images" + (f": {bad}" if bad else ""))
