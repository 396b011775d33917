"""PNG output: labelled grids and single images, small inputs upscaled with nearest-neighbour."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

MIN_SIDE = 112


def is_image(x: torch.Tensor) -> bool:
    """Whether a batch (N, C, H, W) holds pictures: 1 or 3 channels, sides of at least 4."""
    return x.dim() == 4 and x.shape[1] in (1, 3) and min(x.shape[2:]) >= 4


def to_uint8(x: torch.Tensor, value_range: tuple[float, float]) -> np.ndarray:
    """(C, H, W) in ``value_range`` -> (H, W) or (H, W, 3) uint8."""
    low, high = value_range
    arr = ((x.detach().cpu().float() - low) / (high - low)).clamp(0, 1).mul(255).round().byte().numpy()
    return arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0)


def upscaled(x: torch.Tensor, value_range: tuple[float, float]) -> Image.Image:
    """One input as an RGB picture, small ones enlarged (nearest-neighbour) to at least ``MIN_SIDE``."""
    img = Image.fromarray(to_uint8(x, value_range))
    factor = max(1, -(-MIN_SIDE // min(img.size)))
    return img.resize((img.width * factor, img.height * factor), Image.NEAREST).convert("RGB")


def save_grid(inputs: torch.Tensor, captions: list[str], path: Path, value_range: tuple[float, float],
              columns: int | None = None) -> None:
    """A contact sheet: one tile per input with its caption underneath."""
    sheet = grid_image(inputs, captions, value_range, columns)
    if sheet is not None:
        sheet.save(path)


def grid_image(inputs: torch.Tensor, captions: list[str], value_range: tuple[float, float],
               columns: int | None = None) -> Image.Image | None:
    """The contact sheet of :func:`save_grid` as a picture (``None`` for no inputs)."""
    tiles = [upscaled(x, value_range) for x in inputs]
    if not tiles:
        return None
    w, h = tiles[0].size
    font = ImageFont.load_default()
    caption_h = 16
    cols = columns or min(len(tiles), max(1, int(np.ceil(np.sqrt(len(tiles) * 1.5)))))
    rows = -(-len(tiles) // cols)
    pad = 4
    sheet = Image.new("RGB", (cols * (w + pad) + pad, rows * (h + caption_h + pad) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (tile, caption) in enumerate(zip(tiles, captions, strict=False)):
        r, c = divmod(i, cols)
        x0, y0 = pad + c * (w + pad), pad + r * (h + caption_h + pad)
        sheet.paste(tile, (x0, y0))
        text = caption if len(caption) <= w // 6 else caption[: w // 6 - 1] + "…"
        draw.text((x0 + 2, y0 + h + 2), text, fill="black", font=font)
    return sheet


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "item"


def save_items(inputs: torch.Tensor, captions: list[str], folder: Path, value_range: tuple[float, float]) -> None:
    """One PNG per input, named by its position and caption (``item_03_class_3.png``)."""
    for i, (x, caption) in enumerate(zip(inputs, captions, strict=False)):
        upscaled(x, value_range).save(folder / f"item_{i:03d}_{safe_name(caption)}.png")
