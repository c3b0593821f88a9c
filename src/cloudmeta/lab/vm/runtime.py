"""What every VM boot of a lab needs once: the image (built if missing) and the accelerator."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cloudmeta.lab.vm import accel, image

__all__ = ["VmOptions", "prepare"]


@dataclass(frozen=True, slots=True)
class VmOptions:
    """How to boot one VM instance."""

    image: image.BootImage
    accel: accel.Accel
    memory_mb: int = 512
    cdrom: Path | None = None  # an ISO attached as a CD-ROM (the config drive)


async def prepare(
    cache: Path,
    image_file: Path | None = None,
    *,
    memory_mb: int = 512,
    say: Callable[[str], None] | None = None,
) -> VmOptions:
    """The lab's image (or the user's ``image_file``) and KVM-or-TCG, said in one line."""
    if image_file is not None:
        boot = await image.user_image(image_file)
        built = image.cached_image(cache)
    else:
        built = await image.ensure_image(cache, say)
        boot = built.boot
    chosen = await accel.accelerator(cache, built)
    if say is not None:
        say(accel.describe(chosen))
    return VmOptions(image=boot, accel=chosen, memory_mb=memory_mb)
