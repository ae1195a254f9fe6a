"""The FP4 codec anchor of `deploy/bench`: MXFP4 and NVFP4 quantize + pack and unpack written with
torch tensor ops (the way the references, transformers' and modelopt's, compute them), on the same
kind of weight as `moetune-bench fp4` (normal, std 0.02, f32). Prints one JSON line of GB/s of f32."""

import argparse
import json
import time

import torch

E2M1 = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0])
# Midpoints between neighbouring E2M1 magnitudes; a tie goes to the even code.
MIDPOINTS = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0])
ODD_TIES = torch.tensor([0.75, 1.75, 3.5])


def e2m1_codes(x):
    magnitude = x.abs()
    code = torch.bucketize(magnitude, MIDPOINTS)  # ties at even midpoints round down (to the even code)
    code += torch.isin(magnitude, ODD_TIES).to(code.dtype)  # ties at odd midpoints round up
    return (code | ((x < 0).to(code.dtype) << 3)).to(torch.uint8)


def pack(codes):
    pairs = codes.view(*codes.shape[:-1], -1, 2)
    return pairs[..., 0] | (pairs[..., 1] << 4)


def unpack(packed):
    return torch.stack([packed & 0x0F, packed >> 4], dim=-1).flatten(-2)


def mxfp4_encode(w):
    blocks = w.view(w.shape[0], -1, 32)
    amax = blocks.abs().amax(-1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
    exponent = torch.floor(torch.log2(amax)) - 2
    codes = e2m1_codes(blocks / torch.exp2(exponent))
    return pack(codes), (exponent.squeeze(-1) + 127).to(torch.uint8)


def mxfp4_decode(packed, scales):
    values = E2M1[unpack(packed).long()]
    return (values * torch.exp2(scales.float() - 127).unsqueeze(-1)).flatten(1)


def nvfp4_encode(w):
    global_scale = w.abs().amax() / (6.0 * 448.0)
    blocks = w.view(w.shape[0], -1, 16)
    block_scale = (blocks.abs().amax(-1, keepdim=True) / 6.0 / global_scale).to(torch.float8_e4m3fn)
    scale = block_scale.float() * global_scale
    codes = e2m1_codes(blocks / torch.where(scale == 0, 1.0, scale))
    return pack(codes), block_scale.squeeze(-1), global_scale


def nvfp4_decode(packed, block_scale, global_scale):
    values = E2M1[unpack(packed).long()]
    return (values * (block_scale.float() * global_scale).unsqueeze(-1)).flatten(1)


def timed(f):
    started = time.perf_counter()
    value = f()
    return value, time.perf_counter() - started


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bytes", type=int, default=1 << 30)
    p.add_argument("--cols", type=int, default=4096)
    args = p.parse_args()
    rows = args.bytes // 4 // args.cols
    torch.manual_seed(3)
    w = torch.randn(rows, args.cols) * 0.02
    size = w.numel() * 4
    (mx, mx_enc) = timed(lambda: mxfp4_encode(w))
    (_, mx_dec) = timed(lambda: mxfp4_decode(*mx))
    del mx
    (nv, nv_enc) = timed(lambda: nvfp4_encode(w))
    (_, nv_dec) = timed(lambda: nvfp4_decode(*nv))
    print(json.dumps({
        "bench": "fp4", "impl": "torch", "bytes": size, "cols": args.cols, "threads": torch.get_num_threads(),
        "mxfp4_encode_gbps": size / mx_enc / 1e9, "mxfp4_decode_gbps": size / mx_dec / 1e9,
        "nvfp4_encode_gbps": size / nv_enc / 1e9, "nvfp4_decode_gbps": size / nv_dec / 1e9,
    }))


if __name__ == "__main__":
    main()
