"""Batched JPEG decoders on the GPU: nvImageCodec where installed, else torchvision's nvJPEG.

:func:`jpeg_decoder` picks one per device (and says which by its ``name``); each takes a list of
JPEG bytes and returns ``3 x H x W`` uint8 images on the device, EXIF orientation applied, and
None for one it could not decode (the nvjpeg backend then decodes it on the CPU).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import torch

from sslpipe.ops.decoding import orient
from sslpipe.ops.jpeg import exif_orientation

__all__ = ["JpegBatchDecoder", "JpegDecoder", "NvImageCodecDecoder", "TorchvisionJpegDecoder",
           "jpeg_decoder"]


JpegDecoder = Callable[..., list[torch.Tensor]]
JpegBatchDecoder = Callable[[list[bytes], torch.device], list["torch.Tensor | None"]]


def jpeg_decoder(device: torch.device) -> JpegBatchDecoder:
    """The batched JPEG decoder for ``device``: nvImageCodec where it is installed (it comes
    with DALI, or ``pip install nvidia-nvimgcodec-cu13``): "fancy" chroma upsampling like the
    CPU decoders, the EXIF orientation, the hardware JPEG engine where the GPU has one;
    otherwise torchvision's ``decode_jpeg`` (nvJPEG with its default nearest chroma
    upsampling: up to about 70 levels from the CPU decoders at sharp colour edges, 0.65 on
    average; ``benchmarks/jpeg_decoders.py``), with the EXIF orientation applied after."""
    key = str(device)
    if key not in _DECODERS:
        try:
            _DECODERS[key] = NvImageCodecDecoder(device)
        except ImportError:
            _DECODERS[key] = TorchvisionJpegDecoder()
    return _DECODERS[key]


_DECODERS: dict[str, JpegBatchDecoder] = {}


class NvImageCodecDecoder:
    """nvImageCodec's batched decoder: ``f(list of JPEG bytes, device) -> list of 3 x H x W
    uint8 tensors on device`` (None where it cannot decode), upright, fancy upsampling.

    Raises:
        ImportError: nvImageCodec is not installed.
    """

    name = "nvimgcodec"

    def __init__(self, device: torch.device) -> None:
        from nvidia import nvimgcodec  # type: ignore[attr-defined]

        self.nv = nvimgcodec
        if device.type == "cuda":
            self.decoder = nvimgcodec.Decoder(device_id=device.index or 0,
                                              options=":fancy_upsampling=1")
        else:
            self.decoder = nvimgcodec.Decoder(
                device_id=nvimgcodec.NVIMGCODEC_DEVICE_CPU_ONLY,
                backends=[nvimgcodec.Backend(nvimgcodec.CPU_ONLY)], options=":fancy_upsampling=1")
        self.params = nvimgcodec.DecodeParams(apply_exif_orientation=True)

    def __call__(self, data: list[bytes], device: torch.device) -> list[torch.Tensor | None]:
        streams = [self.nv.CodeStream(d) for d in data]
        if device.type == "cuda":
            # ordered on this thread's stream (run_ahead's side stream): no host wait
            stream = torch.cuda.current_stream(device).cuda_stream
            images = self.decoder.decode(streams, params=self.params, cuda_stream=stream)
            return [None if im is None else _rgb(torch.from_dlpack(im).permute(2, 0, 1))
                    for im in images]
        images = self.decoder.decode(streams, params=self.params)
        return [None if im is None else
                _rgb(torch.from_numpy(np.asarray(im.cpu()).copy()).permute(2, 0, 1))
                for im in images]


class TorchvisionJpegDecoder:
    """torchvision's batched ``decode_jpeg`` (nvJPEG on CUDA) with the EXIF orientation
    applied after: ``f(list of JPEG bytes, device) -> list of 3 x H x W uint8 tensors`` (None
    where it cannot decode). One JPEG nvJPEG rejects fails the whole batched call: the batch
    is then decoded one by one."""

    name = "torchvision"

    def __init__(self, decode_jpeg: JpegDecoder | None = None) -> None:
        if decode_jpeg is None:
            from torchvision.io import decode_jpeg as torchvision_decode_jpeg

            decode_jpeg = torchvision_decode_jpeg
        self.decode_jpeg = decode_jpeg

    def __call__(self, data: list[bytes], device: torch.device) -> list[torch.Tensor | None]:
        from torchvision.io import ImageReadMode

        tensors = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in data]
        with warnings.catch_warnings():
            # torchvision 0.29 marks its image codecs deprecated in favour of torchcodec.
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                decoded: list[torch.Tensor | None] = list(
                    self.decode_jpeg(tensors, mode=ImageReadMode.RGB, device=device))
            except RuntimeError:
                decoded = []
                for t in tensors:
                    try:
                        decoded.append(self.decode_jpeg([t], mode=ImageReadMode.RGB,
                                                        device=device)[0])
                    except RuntimeError:
                        decoded.append(None)
        return [None if x is None else orient(_rgb(x), exif_orientation(d))
                for x, d in zip(decoded, data)]


def _rgb(x: torch.Tensor) -> torch.Tensor:
    return x.expand(3, -1, -1) if x.shape[0] == 1 else x[:3]
