"""PaliGemma's segmentation tokens to masks (private to the PaliGemma adapter).

A `segment cat` answer reads ``<loc…>×4 <seg…>×16 cat`` per object: the box, then 16 codes of a
VQ-VAE codebook (128 entries) that big_vision's segmentation transfer trained on Open Images
(weights file ``vae-oid.npz``). `MaskDecoder` is that VQ-VAE's decoder in PyTorch: the 16 codes'
embeddings as a 4×4 grid, a 1×1 convolution to 128 channels, two residual blocks (3×3, 3×3, 1×1),
four stride-2 transposed convolutions (128, 64, 32, 16 channels: 4×4 up to 64×64), and a 1×1
convolution to one channel whose value in [-1, 1] is the mask's (``v / 2 + 0.5``, over 0.5 is in).

The npz holds the PyTorch state dict of the original: ``_vq_vae._embedding`` (128, 512) and
``decoder.<i>.weight`` / ``.bias`` of the layers above (index as in an ``nn.Sequential`` with the
ReLUs: 0, 2, 3, 4, 6, 8, 10, 12; the residual blocks' convolutions at ``.net.0/.2/.4``).
`write_random` writes a file of the same layout with random weights (the offline demo's).

`place` scales a decoded mask into its object's box on the whole image (the PaliGemma adapter reads
the objects from the model's text: `paligemma.read_objects`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from vlmq.tasks.adapters.base import SetupError

CODES = 16  # codes per mask: a 4 x 4 grid
CODEBOOK = 128  # <seg000> .. <seg127>
EMBEDDING = 512
MASK_SIDE = 64


class _Residual(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


class MaskDecoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Parameter(torch.zeros(CODEBOOK, EMBEDDING), requires_grad=False)
        layers: list[nn.Module] = [nn.Conv2d(EMBEDDING, 128, 1), nn.ReLU(), _Residual(128), _Residual(128)]
        channels = 128
        for out in (128, 64, 32, 16):
            layers += [nn.ConvTranspose2d(channels, out, 4, stride=2, padding=1), nn.ReLU()]
            channels = out
        layers.append(nn.Conv2d(channels, 1, 1))
        self.decoder = nn.Sequential(*layers)

    @classmethod
    def from_npz(cls, path: str | Path) -> MaskDecoder:
        """The decoder with the weights of a ``vae-oid.npz`` file (a `SetupError` if it is not one)."""
        decoder = cls()
        try:
            with np.load(path) as weights:
                state = {"embedding": torch.from_numpy(weights["_vq_vae._embedding"])}
                for name in decoder.decoder.state_dict():
                    state[f"decoder.{name}"] = torch.from_numpy(weights[f"decoder.{name}"])
            decoder.load_state_dict(state)
        except (OSError, KeyError, ValueError, RuntimeError) as exc:
            raise SetupError(f"mask decoder {str(path)!r}: not the weights of PaliGemma's VQ-VAE (vae-oid.npz): {exc}") from exc
        return decoder.eval()

    @torch.inference_mode()
    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        """(n, 16) codes -> (n, 64, 64) mask values in [0, 1]."""
        grid = self.embedding[codes.reshape(-1)].reshape(codes.shape[0], 4, 4, EMBEDDING)
        out = self.decoder(grid.permute(0, 3, 1, 2))[:, 0]
        return (out * 0.5 + 0.5).clamp(0, 1)


def write_random(path: str | Path, seed: int = 0) -> None:
    """A ``vae-oid.npz`` of the real layout with random weights (the offline demo's decoder)."""
    generator = torch.Generator().manual_seed(seed)
    decoder = MaskDecoder()
    arrays = {"_vq_vae._embedding": torch.randn(CODEBOOK, EMBEDDING, generator=generator).numpy()}
    for name, value in decoder.decoder.state_dict().items():
        scale = 1 / max(1, value[0].numel()) ** 0.5 if value.dim() > 1 else 0.01
        arrays[f"decoder.{name}"] = (torch.randn(value.shape, generator=generator) * scale).numpy()
    with open(path, "wb") as file:
        np.savez(file, **arrays)


def place(mask64: np.ndarray, box: tuple[float, float, float, float], width: int, height: int) -> np.ndarray:
    """A 64 x 64 mask (values in [0, 1]) scaled into the box and placed on a `width` x `height`
    image: a boolean (height, width) array, in where the scaled value is over 0.5."""
    x0, y0 = round(box[0]), round(box[1])
    x1, y1 = max(x0 + 1, round(box[2])), max(y0 + 1, round(box[3]))
    x1, y1 = min(x1, width), min(y1, height)
    full = np.zeros((height, width), dtype=bool)
    if x1 > x0 and y1 > y0:
        scaled = Image.fromarray(mask64.astype(np.float32)).resize((x1 - x0, y1 - y0), Image.BILINEAR)
        full[y0:y1, x0:x1] = np.asarray(scaled) > 0.5
    return full
