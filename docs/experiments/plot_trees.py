"""Draw trees-seeds.png: AP50 per seed of ``trees-cpu`` with and without the BN freeze (numbers of trees.md).

Run from the repository root: ``python docs/experiments/plot_trees.py``.
"""
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SEEDS = [0, 1, 2, 3, 4]
# held-out YELL / OSBS_029 / SOAP_061 AP50 per seed (trees.md, "Result" and "What each part ... contributes")
WITH_FREEZE = {"held-out YELL": [0.589, 0.543, 0.535, 0.547, 0.511],
               "OSBS_029": [0.189, 0.224, 0.236, 0.237, 0.171],
               "SOAP_061": [0.209, 0.191, 0.226, 0.314, 0.286]}
WITHOUT_FREEZE = {"held-out YELL": [0.561, 0.526, 0.542, 0.093, 0.544],
                  "OSBS_029": [0.246, 0.183, 0.259, 0.231, 0.272],
                  "SOAP_061": [0.293, 0.194, 0.228, 0.347, 0.295]}
TARGETS = {"held-out YELL": 0.5, "OSBS_029": 0.2, "SOAP_061": 0.2}


def main() -> None:
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.2), sharey=True)
    for ax, name in zip(axes, WITH_FREEZE):
        ax.plot(SEEDS, WITHOUT_FREEZE[name], "o", color="tab:gray", label="without bn_freeze")
        ax.plot(SEEDS, WITH_FREEZE[name], "o", color="tab:blue", label="trees-cpu (bn_freeze=0.353)")
        ax.axhline(TARGETS[name], color="tab:red", lw=1, ls="--", label="target")
        ax.set_title(name)
        ax.set_xlabel("seed")
        ax.set_xticks(SEEDS)
        ax.set_ylim(0, 0.7)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("AP50 (384 px)")
    axes[0].legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(Path(__file__).with_name("trees-seeds.png"), dpi=100)


if __name__ == "__main__":
    main()
