"""The teeny tiny diffusion model of diffusion.ipynb: its noise schedules, its network, its two samplers,
and the sampler that MLflow loads and serves (a model from code).

The notebook explains each piece where it uses it, and trains the very network this file defines.
`mlflow.pyfunc.log_model(python_model="labkit/tiny_diffusion.py", artifacts={"weights": <.npz>},
model_config=<the configuration>)` stores this file as the model's code and the trained weights as plain
arrays in a NumPy .npz file: nothing is pickled. Loading the model runs this file, then `load_context`,
which rebuilds the schedule and the network from the configuration and loads the weights.

The served sampler's contract (USAGE, the signature and the model's metadata say the same): one request
per row of a table, `num_samples` points drawn with `seed`, by `sampler` "ddpm" (all T steps, the default)
or "ddim" with `steps` network evaluations; out, the points of every row one after the other. A table
beyond the limits (rows, points, network evaluations) is refused before any work: MLflow's scoring
server answers 504 after 60 s, but lets the prediction compute on, holding a core and its memory.
"""

import math

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema, TensorSpec
from torch import nn

# --- the noise schedule ------------------------------------------------------------------------------
BETA_START = 1e-4  # the first beta of the linear and quadratic schedules (Ho et al., 2020)
COSINE_OFFSET = 0.008  # Nichol & Dhariwal's s: keeps the first betas of the cosine schedule above zero


def make_betas(schedule: str, timesteps: int, alpha_bar_end: float) -> torch.Tensor:
    """`timesteps` betas that take alpha_bar from 1 down to `alpha_bar_end` along the path `schedule`."""
    if schedule == "cosine":  # alpha_bar = cos^2 of an angle that grows linearly, ending at alpha_bar_end
        start = COSINE_OFFSET / (1 + COSINE_OFFSET) * math.pi / 2
        end = math.acos(math.sqrt(alpha_bar_end) * math.cos(start))
        alpha_bar = torch.linspace(start, end, timesteps + 1, dtype=torch.float64).cos() ** 2
        return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=0.999).float()  # the last beta < 1
    if schedule not in ("linear", "quadratic"):
        raise ValueError(f"unknown schedule {schedule!r}")
    power = 1 if schedule == "linear" else 2  # quadratic: the square roots of the betas grow linearly

    def betas(beta_end: float) -> torch.Tensor:
        first, last = BETA_START ** (1 / power), beta_end ** (1 / power)
        return torch.linspace(first, last, timesteps, dtype=torch.float64) ** power

    low, high = BETA_START, 0.999  # bisection on the last beta: the larger it is, the less signal is left
    for _ in range(50):
        middle = (low + high) / 2
        low, high = (middle, high) if torch.prod(1 - betas(middle)) > alpha_bar_end else (low, middle)
    return betas(high).float()


class Schedule:
    """The betas and the quantities derived from them that training and sampling need."""

    def __init__(self, config: dict):
        self.betas = make_betas(config["schedule"], config["timesteps"], config["alpha_bar_end"])
        self.timesteps = len(self.betas)
        self.alphas = 1 - self.betas
        self.alpha_bar = torch.cumprod(self.alphas, 0)
        self.alpha_bar_previous = torch.cat([torch.ones(1), self.alpha_bar[:-1]])
        # variance of the reverse step's noise: the posterior q(x_{t-1} | x_t, x_0)
        self.posterior_variance = self.betas * (1 - self.alpha_bar_previous) / (1 - self.alpha_bar)

    def add_noise(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        alpha_bar = self.alpha_bar[t].unsqueeze(-1)
        return alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise


# --- the network that predicts the noise -------------------------------------------------------------
EMBEDDING_SIZE = 128


def sinusoidal_embedding(values: torch.Tensor, scale: float = 1.0, size: int = EMBEDDING_SIZE):
    """(...) -> (..., size): sines and cosines of `scale * values` at geometric frequencies."""
    half = size // 2
    frequencies = torch.exp(-math.log(10_000) * torch.arange(half, device=values.device) / (half - 1))
    angles = scale * values.unsqueeze(-1) * frequencies
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class ResidualBlock(nn.Module):
    def __init__(self, size: int):
        super().__init__()
        self.layer = nn.Sequential(nn.Linear(size, size), nn.GELU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layer(x)


class NoisePredictor(nn.Module):
    def __init__(self, hidden_size: int, depth: int, embedding: str):
        super().__init__()
        self.embedding = embedding
        point_features = 2 * EMBEDDING_SIZE if embedding == "sinusoidal" else 2
        self.layers = nn.Sequential(
            nn.Linear(point_features + EMBEDDING_SIZE, hidden_size),
            nn.GELU(),
            *[ResidualBlock(hidden_size) for _ in range(depth)],
            nn.Linear(hidden_size, 2),
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        features = sinusoidal_embedding(x, scale=25.0).flatten(1) if self.embedding == "sinusoidal" else x
        return self.layers(torch.cat([features, sinusoidal_embedding(t.float())], dim=1))


def make_model(config: dict, seed: int = 0, device: str | torch.device = "cpu") -> NoisePredictor:
    """A fresh network for `config`, its weights drawn with the training seed `seed`."""
    torch.manual_seed(seed)
    return NoisePredictor(config["hidden_size"], config["depth"], config["embedding"]).to(device)


# --- the two samplers ---------------------------------------------------------------------------------
CLEAN_RANGE = 3.0  # the data have unit standard deviation and lie within about +-2.5


def predict_clean(model: nn.Module, schedule: Schedule, x: torch.Tensor, t: int) -> torch.Tensor:
    """The clean point x_0 implied by the network's noise estimate at step t, clipped to the data's range."""
    device = next(model.parameters()).device
    noise = model(x.to(device), torch.full((len(x),), t, device=device)).cpu()
    alpha_bar = schedule.alpha_bar[t]
    return ((x - (1 - alpha_bar).sqrt() * noise) / alpha_bar.sqrt()).clamp(-CLEAN_RANGE, CLEAN_RANGE)


@torch.no_grad()
def draw_samples(model: nn.Module, schedule: Schedule, n: int, seed: int, trajectory: bool = False):
    """DDPM: n samples (n x 2, on the CPU), in T network evaluations; with `trajectory`, also the points
    after every step, [(t, points)] from the starting noise (t = T) to the samples (t = 0)."""
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn((n, 2), generator=generator)
    path = [(schedule.timesteps, x)]
    for t in reversed(range(schedule.timesteps)):
        x0 = predict_clean(model, schedule, x, t)
        if t == 0:
            x = x0  # the last step returns the clean point
        else:
            beta, alpha, alpha_bar = schedule.betas[t], schedule.alphas[t], schedule.alpha_bar[t]
            alpha_bar_previous = schedule.alpha_bar_previous[t]
            mean = alpha_bar_previous.sqrt() * beta * x0 + alpha.sqrt() * (1 - alpha_bar_previous) * x
            noise = torch.randn((n, 2), generator=generator)
            x = mean / (1 - alpha_bar) + schedule.posterior_variance[t].sqrt() * noise
        path.append((t, x))
    return (x, path) if trajectory else x


def ddim_path(schedule: Schedule, steps: int) -> list[int]:
    """`steps` distinct steps from T-1 down to 0, evenly spread."""
    return torch.linspace(schedule.timesteps - 1, 0, steps).round().long().unique_consecutive().tolist()


@torch.no_grad()
def draw_samples_ddim(model: nn.Module, schedule: Schedule, n: int, steps: int, seed: int,
                      trajectory: bool = False):  # fmt: skip
    """DDIM: n samples (n x 2, on the CPU) in `steps` network evaluations; with `trajectory`, also the
    points after every step, [(t, points)], as draw_samples gives them."""
    model.eval()
    x = torch.randn((n, 2), generator=torch.Generator().manual_seed(seed))
    path, steps_taken = [(schedule.timesteps, x)], ddim_path(schedule, steps)
    for t, next_t in zip(steps_taken, steps_taken[1:] + [None], strict=True):
        x0 = predict_clean(model, schedule, x, t)
        noise = (x - schedule.alpha_bar[t].sqrt() * x0) / (1 - schedule.alpha_bar[t]).sqrt()
        alpha_bar_next = schedule.alpha_bar[next_t] if next_t is not None else torch.tensor(1.0)
        x = alpha_bar_next.sqrt() * x0 + (1 - alpha_bar_next).sqrt() * noise
        path.append((t, x))
    return (x, path) if trajectory else x


# --- the served sampler: its contract, its limits, and the model MLflow loads -------------------------
SAMPLERS = ("ddpm", "ddim")
MAX_ROWS = 100  # requests in one table
MAX_SAMPLES = 100_000  # points in one table, all its rows together
MAX_WORK = 1_000_000  # network evaluations of a point in one table: num_samples x steps, summed over rows
LIMITS = {"max_rows": MAX_ROWS, "max_samples": MAX_SAMPLES, "max_work": MAX_WORK, "clip_range": CLEAN_RANGE}
SIGNATURE = ModelSignature(
    inputs=Schema([
        ColSpec("long", "num_samples"),
        ColSpec("long", "seed"),
        ColSpec("string", "sampler", required=False),
        ColSpec("long", "steps", required=False),
    ]),
    outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 2))]),
)  # fmt: skip
USAGE = (
    "Draws 2D points. predict(DataFrame) returns a (total num_samples, 2) float32 array, the rows' points in "
    "row order. One request per row: num_samples (at least 1) points drawn with seed (an integer); optional: "
    "sampler, 'ddpm' (the default, all T steps) or 'ddim', and steps (ddim: 1 to T network evaluations, T "
    f"if not given). Limits per table: at most {MAX_ROWS} rows, {MAX_SAMPLES} points in all, and "
    f"{MAX_WORK} network evaluations of a point in all (num_samples x steps summed over the rows); a table "
    f"beyond them is refused (HTTP 400) before any work. Points are clipped to +-{CLEAN_RANGE}: a point on "
    "that edge is one the network put outside the data, the mark of a sampler that diverges. Loading the "
    "sampler sets PyTorch to one thread in the loading process: the limits are sized for one core."
)


def refuse(message: str):
    raise MlflowException.invalid_parameter_value(message)  # served over HTTP: a 400 with this message


def checked_requests(table: pd.DataFrame, timesteps: int) -> list[tuple[int, int, str, int]]:
    """(num_samples, seed, sampler, steps) of each row, defaults filled in, once the whole table is checked
    against the limits; a table out of bounds is refused with what is allowed, before any work."""
    if table.empty:
        refuse(f"the table is empty: send 1 to {MAX_ROWS} rows, each with num_samples and seed")
    if len(table) > MAX_ROWS:
        refuse(f"the table has {len(table)} rows: at most {MAX_ROWS} requests per table")
    requests, problems = [], []
    for row, request in enumerate(table.to_dict("records")):
        given = {key: value for key, value in request.items() if not pd.isna(value)}  # empty optional cells
        if not {"num_samples", "seed"} <= set(given):
            problems.append(f"row {row}: num_samples and seed are required")
            continue
        n, seed = int(given["num_samples"]), int(given["seed"])
        sampler, steps = given.get("sampler", "ddpm"), int(given.get("steps", timesteps))
        if n < 1:
            problems.append(f"row {row}: num_samples must be at least 1, not {n}")
        if sampler not in SAMPLERS:
            problems.append(f"row {row}: sampler must be one of {', '.join(SAMPLERS)}, not {sampler!r}")
        elif sampler == "ddpm" and steps != timesteps:
            problems.append(
                f"row {row}: steps must be {timesteps} (all) for ddpm, not {steps}; ddim takes fewer"
            )
        elif not 1 <= steps <= timesteps:
            problems.append(f"row {row}: steps must be from 1 to {timesteps} for ddim, not {steps}")
        requests.append((n, seed, sampler, steps))
    if problems:
        refuse("; ".join(problems))
    points, work = sum(n for n, *_ in requests), sum(n * steps for n, _, _, steps in requests)
    if points > MAX_SAMPLES:
        refuse(f"the table asks for {points} points: at most {MAX_SAMPLES} per table")
    if work > MAX_WORK:
        refuse(f"the table asks for {work} network evaluations (num_samples x steps summed over its rows; "
               f"ddpm takes all {timesteps} steps): at most {MAX_WORK} per table; ask for fewer points, or "
               "for ddim with fewer steps")  # fmt: skip
    return requests


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def save_weights(model: nn.Module, path) -> None:
    """The network's weights as plain arrays in a NumPy .npz file (what `load_context` reads back)."""
    np.savez(path, **{name: tensor.detach().cpu().numpy() for name, tensor in model.state_dict().items()})


class DiffusionSampler(mlflow.pyfunc.PythonModel):
    """A trained noise predictor and its two samplers, behind the limits above; see USAGE."""

    def load_context(self, context):
        self.device = pick_device()  # where the model is loaded, not where it was trained
        torch.set_num_threads(1)  # one core per request: MAX_WORK is sized for one
        self.schedule = Schedule(context.model_config)
        self.model = make_model(context.model_config, device=self.device)
        weights = np.load(context.artifacts["weights"])  # refuses pickled content
        self.model.load_state_dict({name: torch.from_numpy(weights[name]) for name in weights.files})

    def predict(self, context, model_input: pd.DataFrame, params=None) -> np.ndarray:
        requests = checked_requests(pd.DataFrame(model_input), self.schedule.timesteps)  # before any work
        batches = [
            draw_samples_ddim(self.model, self.schedule, n, steps, seed=seed)
            if sampler == "ddim"
            else draw_samples(self.model, self.schedule, n, seed=seed)
            for n, seed, sampler, steps in requests
        ]
        return torch.cat(batches).numpy()


mlflow.models.set_model(DiffusionSampler())
