"""Scout 7: a noise-robust decoder. The pipeline's codec (encoder frozen) gets its decoder fine-tuned on noisy
latents: decode(z + σ·ε), σ ~ U[0, SIGMA] in the DiT's normalised latent units, target = the clean image (MSE +
0.5·L1). Generated latents are off the encoder's manifold; a decoder that maps nearby latents to the clean shape
snaps them back.  usage: THREADS=2 python decoder_noise.py <pipeline_root> <out_dir> STEPS SIGMA [LR=1e-4]"""
import os, sys, time, json, math
os.environ.setdefault("HF_HUB_OFFLINE", "1")
from pathlib import Path
import torch
sys.path.insert(0, "/work/main")
from sana_core.latents import load_codec, to_pixels, psnr
from sana_core.geneval.dataset import load_images, load_manifest
torch.set_num_threads(int(os.environ.get("THREADS", "2")))
root, out = Path(sys.argv[1]), Path(sys.argv[2])
steps, smax = int(sys.argv[3]), float(sys.argv[4])
lr = float(sys.argv[5]) if len(sys.argv) > 5 else 1e-4
c = load_codec(root / "models/codec")
vae, sf = c.vae, c.scaling_factor
man = load_manifest(root / "data/shapes")
clean = man.index[man["defect"].isin(["none", "wrong_caption", "incomplete_caption"])].to_numpy()
x = to_pixels(load_images(root / "data/shapes")[clean])
with torch.no_grad():
    z = torch.cat([vae.encode(x[i:i + 256]).latent for i in range(0, len(x), 256)])
xv, zv = x[-64:], z[-64:]
x, z = x[:-64], z[:-64]
opt = torch.optim.AdamW(vae.decoder.parameters(), lr=lr)
g = torch.Generator().manual_seed(0)
t0 = time.time()
for step in range(1, steps + 1):
    idx = torch.randint(0, len(x), (16,), generator=g)
    sig = torch.rand(16, 1, 1, 1, generator=g) * smax
    zn = z[idx] + sig / sf * torch.randn(z[idx].shape, generator=g)
    rec = vae.decode(zn).sample
    loss = torch.nn.functional.mse_loss(rec, x[idx]) + 0.5 * torch.nn.functional.l1_loss(rec, x[idx])
    opt.zero_grad(); loss.backward(); opt.step()
    for gr in opt.param_groups:
        gr["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
    if step % 100 == 0:
        with torch.no_grad():
            p0 = psnr(vae.decode(zv).sample, xv); p3 = psnr(vae.decode(zv + 0.3 / sf * torch.randn_like(zv)).sample, xv)
        print(step, round(time.time() - t0), round(loss.item(), 4), "psnr clean", round(p0, 2), "σ.3", round(p3, 2), flush=True)
vae.eval()
c.save(out)
