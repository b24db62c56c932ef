"""Run by tests/test_parallel.py: best-of-N (sana_core.scaling.best_of_n) and the geneval stage's generate-and-judge
(generate_and_judge) on a smoke sampler, in one process or under `torchrun --nproc_per_node=2` (gloo); the main
process pickles the results to argv[1]."""
import os
import pickle
import sys

import numpy as np
import torch

torch.set_num_threads(1)
from sana_core.judges import Judge  # noqa: E402
from sana_core.latents import build_codec  # noqa: E402
from sana_core.model import build_transformer  # noqa: E402
from sana_core.parallel import is_main_process, num_processes  # noqa: E402
from sana_core.sample import Sampler  # noqa: E402
from sana_core.scaling import best_of_n, generate_and_judge  # noqa: E402
from sana_core.text import build_text_encoder  # noqa: E402


class RedJudge(Judge):
    """p_yes = mean red level; records the process that judged each call."""
    name = "red"

    def decide(self, prompt, images, metadata=None):
        p = torch.as_tensor(np.asarray(images)[..., 0].astype(np.float64).mean(axis=(1, 2)) / 255).float()
        return p >= 0.5, p, 1 - p


tr = build_transformer("smoke", seed=0)
with torch.no_grad():
    tr.caption_norm.weight.fill_(1.0)
sampler = Sampler(tr, build_codec("smoke"), build_text_encoder({"max_length": 24}), {"steps": 2, "batch_size": 4})
prompts = ["a photo of a red circle", "a photo of two blue squares", "a photo of a green triangle",
           "a photo of a yellow cross", "a photo of a red square"]
calls = []


def generate(prompts_, seeds_):
    calls.append(len(prompts_))
    return sampler.generate(prompts_, seeds_)


bon = best_of_n(generate, RedJudge(), prompts, n=6, k=2, seeds=[5, 3, 9, 1, 7, 2], batch_size=4)
imgs, verdicts = generate_and_judge(sampler, [{"prompt": p} for p in prompts], [0, 1, 2, 3, 4, 5], {"red": RedJudge()})
from accelerate.utils import gather_object  # noqa: E402
per_process = gather_object([sum(calls)]) if num_processes() > 1 else [sum(calls)]   # images each process generated
if is_main_process():
    with open(sys.argv[1], "wb") as f:
        pickle.dump({"processes": num_processes(), "world": int(os.environ.get("WORLD_SIZE", 1)),
                     "per_process": per_process,
                     "bon_images": bon.images, "bon_selected": bon.selected, "bon_verdicts": bon.verdicts,
                     "imgs": imgs, "verdicts": verdicts}, f)
