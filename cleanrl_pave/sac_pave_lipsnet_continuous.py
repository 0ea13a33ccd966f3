# ===== PAVE + LipsNet begin =====
# PAVE + LipsNet on SAC (README: Baselines): PAVE's three critic-loss terms with the LipsNet actor and its K penalty.
# The method blocks are those of sac_pave_continuous.py and sac_lipsnet_continuous.py, PAVE first where both add code
# at one place.
# ===== PAVE + LipsNet end =====
# SAC with the paper's "SiLU-unified" backbone (PAVE, ICML 2026; README: The backbones), CleanRL style: fixed entropy
# coefficient, 50 gradient steps every 50 env steps, 0.5 x TD loss (the release's SB3 convention).
# Reference: Haarnoja et al. 2018, "Soft Actor-Critic Algorithms and Applications".
import copy
import dataclasses
import hashlib
import json
import os
import random
import sys
import time
from dataclasses import dataclass
from typing import Literal, Optional

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import tyro
from torch.utils.tensorboard import SummaryWriter

from cleanrl_pave.checks import make_checked_env, require_ranges
from cleanrl_pave.checkpointing import (
    CHECKPOINT_FILE,
    CheckpointSchedule,
    RandomStreams,
    ResumableEnv,
    StopSignals,
    atomic_torch_save,
    checkpoint_state,
    find_resumable_run,
    jsonable,
    load_checkpoint,
    restore_state,
    resume_command,
)
from cleanrl_pave.compiling import compile_with_fallback
from cleanrl_pave.critic_geometry import geometry_metrics
from cleanrl_pave.cuda_graphs import CudaGraphed
from cleanrl_pave.evaluation import EVAL_SEED_OFFSET, evaluate, log_evaluation, summarize, write_results
from cleanrl_pave.monitoring import Progress, WandbVideos
from cleanrl_pave.nonfinite_guard import NonFiniteGuard
from cleanrl_pave.provenance import resumed_segments, segment

SCRIPT = os.path.basename(__file__)[: -len(".py")]


# Hidden activations of the actor and the critics, by name: the one table to extend (`--activation` offers its
# keys; README: Adding a method)
ACTIVATIONS = {"silu": nn.SiLU, "relu": nn.ReLU}


@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment"""
    seed: int = 1
    """seed of the experiment"""
    torch_deterministic: bool = True
    """if toggled, `torch.backends.cudnn.deterministic=True`"""
    cuda: bool = True
    """if toggled, cuda will be used when available"""
    threads: int = 1
    """CPU threads for torch: 1 is safe when runs share the machine; more is faster only for a run alone (README)"""
    compile: bool = False
    """if toggled, the loss computations are compiled with torch.compile"""
    cudagraphs: bool = False
    """if toggled, the losses are compiled as with --compile and, on a GPU, each whole update and the acting policy are
    recorded once as CUDA graphs and replayed (README "GPU"); on a CPU it is --compile"""
    track: bool = False
    """if toggled, this experiment will be tracked with Weights and Biases"""
    wandb_project_name: str = "cleanrl_pave"
    """the wandb's project name"""
    wandb_entity: Optional[str] = None
    """the entity (team) of wandb's project"""
    wandb_group: Optional[str] = None
    """the wandb group of this run (default: `{env_id}__{exp_name}`, so that a workspace groups each cell's seeds)"""
    wandb_tags: tuple[str, ...] = ()
    """extra wandb tags"""
    capture_video: bool = False
    """whether to capture videos of the agent performances (check out `videos` folder)"""
    save_model: bool = False
    """whether to save the final model into `runs/{run_name}`"""
    run_name: Optional[str] = None
    """name of the run directory under `runs/` (default: `{env_id}__{exp_name}__{seed}__{unix time}`)"""
    resume: bool = False
    """continue the run from its latest checkpoint (the `--run-name` one, else the newest of this env/exp/seed)"""
    checkpoint_freq: int = 0
    """save a checkpoint every this many env steps (0: never)"""
    checkpoint_minutes: float = 0.0
    """also save a checkpoint every this many minutes of wall time (0: never); SIGINT and SIGTERM always save one"""
    log_freq: int = 100
    """log losses and SPS every this many env steps"""
    progress_interval: float = 10.0
    """print a progress line (step, SPS, ETA, latest training return) every this many seconds (0: never)"""
    eval_freq: int = 10_000
    """evaluate the deterministic policy every this many env steps (0: only at the end)"""
    eval_episodes: int = 10
    """number of deterministic evaluation episodes"""
    geometry_freq: int = 0
    """log critic geometry on the latest evaluation states every this many env steps (0: never)"""

    # Algorithm specific arguments
    env_id: str = "Hopper-v5"
    """the id of the environment"""
    total_timesteps: Optional[int] = None
    """total timesteps of the experiments (paper: 100000 on Pendulum; 500000 on LunarLander, Reacher; 1000000 on
    every other env)"""
    learning_rate: float = 1e-3
    """the learning rate of the actor and critic optimizers"""
    buffer_size: Optional[int] = None
    """the replay memory buffer size (paper: 1000000 on every env)"""
    gamma: Optional[float] = None
    """the discount factor gamma (paper: 0.99 on every env)"""
    tau: float = 0.005
    """target smoothing coefficient"""
    batch_size: int = 100
    """the batch size of sample from the replay memory"""
    learning_starts: int = 10_000
    """number of uniformly random warm-up steps before learning starts"""
    train_freq: int = 50
    """train every this many env steps..."""
    gradient_steps: int = 50
    """...with this many gradient steps (actor, critics and targets each step)"""
    alpha: float = 0.2
    """the fixed entropy regularization coefficient (the paper does not autotune it)"""
    hidden_sizes: tuple[int, ...] = (256, 256)
    """hidden layer sizes of the actor and of each critic"""
    activation: Literal[tuple(ACTIVATIONS)] = "silu"
    """hidden activation of actor and critics (the paper uses SiLU for every method)"""
    # ===== PAVE + LipsNet begin =====
    lam_mpr: Optional[float] = None
    """PAVE weight lambda_1 of the mixed-partial term MPR (paper: 2.0 on Hopper, Walker2d; 0.1 on every other env)"""
    lam_vfc: Optional[float] = None
    """PAVE weight lambda_2 of the vector-field-consistency term VFC (paper: 0.0005 on Ant, Hopper, Humanoid,
    Reacher; 0.5 on LunarLander; 0.005 on Pendulum, Walker2d; 0.1 on every other env)"""
    lam_curv: Optional[float] = None
    """PAVE weight lambda_3 of the curvature term Curv (paper: 1.0 on Ant, Humanoid, Reacher; 3.0 on Hopper;
    0.05 on LunarLander; 0.5 on Pendulum; 2.0 on Walker2d; 0.01 on every other env)"""
    pave_sigma: float = 0.01
    """std of the MPR state perturbation eps ~ N(0, sigma^2 I), in raw observation units"""
    pave_delta: float = 1.0
    """curvature margin delta of Curv = sum_i mean relu(v^T H_i v + delta)"""
    pave_compile: bool = True
    """compile the PAVE loss (torch.compile, once per process; README "PAVE"; not when all three weights are 0);
    eager if compiling fails"""
    lam_k: float = 1e-5
    """weight lambda_K of the LipsNet penalty mean(K(s)^2) in the actor loss (paper: 1e-5 on every env)"""
    lipsnet_hidden_sizes: tuple[int, ...] = (256, 256)
    """hidden layer sizes of the LipsNet ReLU network f of the policy mean, whose last hidden features also feed the
    log-std head (paper: 256 256 for SAC); --hidden-sizes sizes the critic"""
    # ===== PAVE + LipsNet end =====


# Settings of the release (paper Tables 7-8) for the paper's envs; an explicit flag always wins.
DEFAULT_ENV_SETTINGS = {"total_timesteps": 1_000_000, "gamma": 0.99, "buffer_size": 1_000_000}
PAPER_ENV_SETTINGS = {
    "Pendulum-v1": {"total_timesteps": 100_000},
    "LunarLanderContinuous-v3": {"total_timesteps": 500_000},
    "Reacher-v5": {"total_timesteps": 500_000},
}


def resolve_args(args: Args) -> Args:
    """Fill every unset (None) setting with the paper's value for this env, then reject impossible values."""
    paper = {**DEFAULT_ENV_SETTINGS, **PAPER_ENV_SETTINGS.get(args.env_id, {})}
    args = dataclasses.replace(args, **{key: value for key, value in paper.items() if getattr(args, key) is None})
    require_ranges(args, positive=("learning_rate", "total_timesteps", "buffer_size", "batch_size", "eval_episodes",
                                    "log_freq", "train_freq", "gradient_steps", "threads"),
                   non_negative=("learning_starts", "eval_freq", "checkpoint_freq", "checkpoint_minutes",
                                 "geometry_freq", "progress_interval"))
    # ===== LipsNet begin =====
    require_ranges(args, non_negative=("lam_k",))
    if not args.lipsnet_hidden_sizes or min(args.lipsnet_hidden_sizes) <= 0:
        raise SystemExit(f"error: --lipsnet-hidden-sizes must be positive integers, got {args.lipsnet_hidden_sizes}")
    # ===== LipsNet end =====
    if args.log_freq % args.train_freq:
        raise SystemExit(f"error: --log-freq ({args.log_freq}) must be a multiple of --train-freq "
                         f"({args.train_freq}) so that every logged step has losses")
    if args.buffer_size < args.batch_size:
        raise SystemExit(f"error: --buffer-size ({args.buffer_size}) must hold at least one batch "
                         f"(--batch-size {args.batch_size})")
    if not args.hidden_sizes or min(args.hidden_sizes) <= 0:
        raise SystemExit(f"error: --hidden-sizes must be positive integers, got {args.hidden_sizes}")
    return args


def make_env(env_id: str, seed: int, capture_video: bool = False, run_name: str = "") -> gym.Env:
    """One env with episode statistics; a clear one-line error for ids, spaces or extras we cannot use."""
    env = make_checked_env(env_id, video_folder=f"videos/{run_name}" if capture_video else None)
    env = gym.wrappers.RecordEpisodeStatistics(env)
    env.action_space.seed(seed)
    return env


def to_env_action(action: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Map an action in the networks' [-1, 1] space to the env's [low, high] box."""
    return low + (action + 1.0) * 0.5 * (high - low)


def mlp(sizes: list[int], activation: str) -> nn.Sequential:
    """Linear layers with `activation` between them (none after the last)."""
    layers = []
    for index, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(fan_in, fan_out))
        if index < len(sizes) - 2:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


class QNetwork(nn.Module):
    """Twin critics Q1, Q2 held as ONE stacked MLP: every layer is a batched matmul over the critic axis, so
    both critics run in a single call. forward(obs, actions) -> (2, B); row 0 is Q1."""

    def __init__(self, obs_dim: int, act_dim: int, hidden_sizes, activation: str, num_critics: int = 2):
        super().__init__()
        sizes = [obs_dim + act_dim, *hidden_sizes, 1]
        self.num_critics, self.activation = num_critics, activation
        self.activation_fn = ACTIVATIONS[activation]()
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            # nn.Linear's default initialisation, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), for each critic
            bound = 1.0 / fan_in**0.5
            self.weights.append(nn.Parameter(torch.empty(num_critics, fan_in, fan_out).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(num_critics, 1, fan_out).uniform_(-bound, bound)))

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        x = torch.cat([obs, actions], -1)
        if x.dim() == 2:
            x = x.expand(self.num_critics, *x.shape)
        last = len(self.weights) - 1
        for index, (weight, bias) in enumerate(zip(self.layer_weights(), self.biases)):
            x = torch.baddbmm(bias, x, weight)
            if index < last:
                x = self.activation_fn(x)
        return x.squeeze(-1)

    def layer_weights(self) -> list[torch.Tensor]:
        """Each layer's weight as forward uses it: where a variant changes them (SN-Critic normalises them)."""
        return list(self.weights)


LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0


class Actor(nn.Module):
    """Tanh-squashed Gaussian policy: shared trunk, a mean head and a clamped log-std head (SB3's layout)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden_sizes, activation: str):
        super().__init__()
        self.trunk = nn.Sequential(mlp([obs_dim, *hidden_sizes], activation), ACTIVATIONS[activation]())
        self.fc_mean = nn.Linear(hidden_sizes[-1], act_dim)
        self.fc_logstd = nn.Linear(hidden_sizes[-1], act_dim)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.trunk(obs)
        return self.fc_mean(features), self.fc_logstd(features).clamp(LOG_STD_MIN, LOG_STD_MAX)

    def get_action(self, obs: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterised sample tanh(mean + std * noise) in [-1, 1] and its log-probability, shape (B,)."""
        mean, log_std = self(obs)
        pre_tanh = mean + log_std.exp() * noise
        gaussian_log_prob = -0.5 * noise.pow(2) - log_std - 0.5 * np.log(2.0 * np.pi)
        # log |d tanh(x)/dx| = log(1 - tanh(x)^2), written in a form that stays finite for large |x|
        log_det_jacobian = 2.0 * (np.log(2.0) - pre_tanh - F.softplus(-2.0 * pre_tanh))
        return torch.tanh(pre_tanh), (gaussian_log_prob - log_det_jacobian).sum(-1)

    def deterministic_action(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self(obs)[0])


# ===== LipsNet begin =====
LIPSNET_K_HIDDEN = 32  # K network obs-32-1
LIPSNET_K_INIT = 50.0  # added to the K network's last bias: K(s) = softplus(50 + O(1)) ~ 50 at the start
LIPSNET_EPS = 1e-4  # keeps the normalisation finite where J_f vanishes


class LipsNet(nn.Module):
    """g(s) = K(s) f(s) / (||J_f(s)||_F + eps), the pre-tanh output of a LipsNet.

    f is a ReLU MLP with an identity output, so on each linear region J_f = W_L D_{L-1} W_{L-1} ... D_1 W_1
    (D_l = diag of layer l's ReLU mask); it is formed per sample in one batched pass, differentiable in the weights.
    K(s) = softplus(MLP obs-32-1, tanh hidden) is the learned local Lipschitz constant: with K held fixed, the Jacobian
    of g is K J_f / (||J_f||_F + eps), whose spectral (and Frobenius) norm is below K(s).
    """

    def __init__(self, obs_dim: int, out_dim: int, hidden_sizes):
        super().__init__()
        sizes = [obs_dim, *hidden_sizes, out_dim]
        self.f_layers = nn.ModuleList(nn.Linear(fan_in, fan_out) for fan_in, fan_out in zip(sizes[:-1], sizes[1:]))
        self.k_net = nn.Sequential(nn.Linear(obs_dim, LIPSNET_K_HIDDEN), nn.Tanh(), nn.Linear(LIPSNET_K_HIDDEN, 1))
        # the release's initialisation: Kaiming-normal weights before a ReLU, Xavier-normal for f's output layer and
        # K's layers; every bias keeps nn.Linear's, K's last one plus k_init
        for layer in self.f_layers[:-1]:
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
        for layer in (self.f_layers[-1], self.k_net[0], self.k_net[-1]):
            nn.init.xavier_normal_(layer.weight)
        with torch.no_grad():
            self.k_net[-1].bias.add_(LIPSNET_K_INIT)

    def f_and_jacobian(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """f(s), shape (B, out), its input Jacobian J_f(s), shape (B, out, obs), and f's last hidden features (after
        the ReLU), shape (B, hidden_sizes[-1])."""
        x, masks = obs, []
        for layer in self.f_layers[:-1]:
            pre_activation = layer(x)
            masks.append((pre_activation > 0).to(obs.dtype))  # ReLU'(0) = 0, as autograd has it
            x = pre_activation * masks[-1]
        f = self.f_layers[-1](x)
        # multiply from the output side: every product is (B, out, fan_out) @ (fan_out, fan_in), cheap as out <= obs
        jacobian = self.f_layers[-1].weight.expand(obs.shape[0], -1, -1)
        for layer, mask in zip(reversed(self.f_layers[:-1]), reversed(masks)):
            jacobian = (jacobian * mask.unsqueeze(1)) @ layer.weight
        return f, jacobian, x

    def k_value(self, obs: torch.Tensor) -> torch.Tensor:
        """K(s) > 0, shape (B, 1)."""
        return F.softplus(self.k_net(obs))

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """g(s), shape (B, out), and f's last hidden features (the SAC actor's log-std head reads them)."""
        f, jacobian, features = self.f_and_jacobian(obs)
        jacobian_norm = torch.linalg.matrix_norm(jacobian).unsqueeze(-1)  # Frobenius norm per sample, (B, 1)
        return self.k_value(obs) * f / (jacobian_norm + LIPSNET_EPS), features


class LipsNetActor(Actor):
    """Tanh-squashed Gaussian policy whose mean is a LipsNet and whose log std is a linear head on the LipsNet's f's
    last hidden features (clamped as in the base), as in the release. Only the networks differ from the base Actor: its
    get_action / deterministic_action apply tanh once."""

    def __init__(self, obs_dim: int, act_dim: int, lipsnet_hidden_sizes):
        nn.Module.__init__(self)  # replaces the base Actor's trunk and heads
        self.lipsnet = LipsNet(obs_dim, act_dim, lipsnet_hidden_sizes)
        self.log_std_head = nn.Linear(lipsnet_hidden_sizes[-1], act_dim)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, features = self.lipsnet(obs)
        return mean, self.log_std_head(features).clamp(LOG_STD_MIN, LOG_STD_MAX)


def lipsnet_k_penalty(actor: LipsNetActor, data: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The penalty mean(K(s)^2) over the batch states, differentiable in K's weights, and mean K(s) (for logging)."""
    k_values = actor.lipsnet.k_value(data["obs"])
    return k_values.square().mean(), k_values.detach().mean()


# ===== LipsNet end =====


def make_agent(args: Args, obs_dim: int, act_dim: int) -> tuple[Actor, QNetwork]:
    """The actor and the twin critic of this script (used for training and to reload saved models)."""
    # ===== LipsNet begin =====
    actor = LipsNetActor(obs_dim, act_dim, args.lipsnet_hidden_sizes)
    # ===== LipsNet end =====
    qf = QNetwork(obs_dim, act_dim, args.hidden_sizes, args.activation)
    return actor, qf


class ReplayBuffer:
    """Transitions in one preallocated tensor, a row each: a batch is a single gather and its fields are column
    views of it, with no per-field copies."""

    def __init__(self, capacity: int, field_shapes: dict[str, tuple[int, ...]], device: torch.device):
        self.columns, start = {}, 0
        for name, shape in field_shapes.items():  # shape () is a scalar per transition, (n,) a vector
            self.columns[name] = start if shape == () else slice(start, start + shape[0])
            start += 1 if shape == () else shape[0]
        self.storage = torch.zeros((capacity, start), dtype=torch.float32, device=device)
        self.capacity, self.pos, self.size = capacity, 0, 0

    def add(self, **fields: np.ndarray) -> None:
        row = np.concatenate([np.asarray(fields[name], dtype=np.float32).reshape(-1) for name in self.columns])
        self.storage[self.pos] = torch.from_numpy(row)
        self.pos = (self.pos + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, batch_size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        indices = torch.randint(self.size, (batch_size,), generator=generator, device=self.storage.device)
        batch = self.storage[indices]
        return {name: batch[:, column] for name, column in self.columns.items()}

    def state_dict(self) -> dict:
        # the filled rows as a tensor of their own size sharing the buffer's memory, which torch.save writes without
        # a copy (README: Reproducibility); on a GPU, .cpu() copies just those rows to the host
        rows = self.storage[: self.size]
        rows = torch.from_numpy(rows.numpy()) if rows.device.type == "cpu" else rows.cpu()
        return {"storage": rows, "pos": self.pos, "size": self.size}

    def load_state_dict(self, state: dict) -> None:
        self.pos, self.size = state["pos"], state["size"]
        self.storage[: self.size] = state["storage"]


# ===== PAVE begin =====
# The release's (lambda_MPR, lambda_VFC, lambda_Curv) for SAC (paper Tables 7-8); the default started its search
PAVE_DEFAULT_WEIGHTS = (0.1, 0.1, 0.01)
PAVE_ENV_WEIGHTS = {"Ant-v5": (0.1, 0.0005, 1.0), "Hopper-v5": (2.0, 0.0005, 3.0), "Humanoid-v5": (0.1, 0.0005, 1.0),
                    "LunarLanderContinuous-v3": (0.1, 0.5, 0.05), "Pendulum-v1": (0.1, 0.005, 0.5),
                    "Reacher-v5": (0.1, 0.0005, 1.0), "Walker2d-v5": (2.0, 0.005, 2.0)}


def resolve_pave_args(args: Args) -> Args:
    """Fill unset PAVE weights with the paper's value for this env (an explicit flag wins), then check them."""
    weights = dict(zip(("lam_mpr", "lam_vfc", "lam_curv"), PAVE_ENV_WEIGHTS.get(args.env_id, PAVE_DEFAULT_WEIGHTS)))
    args = dataclasses.replace(args, **{key: value for key, value in weights.items() if getattr(args, key) is None})
    for name in ("lam_mpr", "lam_vfc", "lam_curv", "pave_sigma"):
        value = getattr(args, name)
        if not (np.isfinite(value) and value >= 0):
            raise SystemExit(f"error: --{name.replace('_', '-')} must be a finite non-negative number, got {value}")
    if not np.isfinite(args.pave_delta):
        raise SystemExit(f"error: --pave-delta must be finite, got {args.pave_delta}")
    if args.activation not in ACTIVATION_DERIVATIVES:
        raise SystemExit(f"error: PAVE needs sigma' and sigma'' of --activation {args.activation}: add them to "
                         f"ACTIVATION_DERIVATIVES in {SCRIPT}.py")
    if args.lam_curv and args.activation == "relu":
        print("warning: under ReLU sigma'' = 0, so PAVE's curvature term is the constant relu(delta), with no "
              "gradient: --lam-curv has no effect", file=sys.stderr)
    return args


def silu_derivatives(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SiLU's sigma'(z) = s (1 + z (1 - s)) and sigma''(z) = s (1 - s) (2 + z (1 - 2 s)), with s = sigmoid(z)."""
    s = torch.sigmoid(z)
    return s * (1 + z * (1 - s)), s * (1 - s) * (2 + z * (1 - 2 * s))


# (sigma', sigma'') of each hidden activation as differentiable tensor ops; another activation adds its pair here
ACTIVATION_DERIVATIVES = {"silu": silu_derivatives, "relu": lambda z: ((z > 0).to(z.dtype), torch.zeros_like(z))}


def pave_terms(qf: QNetwork, obs: torch.Tensor, actions: torch.Tensor, state_noise: Optional[torch.Tensor],
               next_obs: Optional[torch.Tensor], probes: Optional[torch.Tensor],
               delta: float) -> dict[str, torch.Tensor]:
    """PAVE's critic terms, summed over the twin critics i of `qf`, with g_i(s) = dQ_i/da at the stored action a:

        mpr  = sum_i MSE(g_i(s), g_i(s + eps))           eps = state_noise
        vfc  = sum_i MSE(g_i(s), g_i(s'))                s' = next_obs
        curv = sum_i mean_batch relu(v^T H_i v + delta)  v = probes (Rademacher), H_i = d2Q_i/da2 at (s, a)

    A term whose input is None is off and is 0 (a term with weight 0 gets None). Also q = Q_i(s, a), (critics, B), for
    the TD loss. The plainest statement of these terms, by autograd critic by critic (the release's way), is
    `reference_terms` in tests/test_pave.py, which checks this function against it; here g and v^T H v are explicit
    sweeps through the MLP in batched tensor ops, and autograd's backward through them gives the release's double and
    triple backward at a fraction of the cost (README: Speed)."""
    terms = dict.fromkeys(("mpr", "vfc", "curv"), obs.new_zeros(()))
    # the states where g is needed, by name: s always, s + eps for MPR, s' for VFC (a new term adds its rows here)
    rows = {"s": obs}
    if state_noise is not None:
        rows["s+eps"] = obs + state_noise
    if next_obs is not None:
        rows["s'"] = next_obs
    if len(rows) == 1 and probes is None:
        return {"q": qf(obs, actions), **terms}
    weights, biases, critics, (batch, obs_dim) = list(qf.weights), list(qf.biases), qf.num_critics, obs.shape
    w_state, w_action = weights[0][:, :obs_dim], weights[0][:, obs_dim:]  # first-layer rows of s and of a
    # z_l (critics, rows * B, H_l): pre-activations of layer l at the rows' states and the stored a (a W_a + b_0)
    states = torch.cat(list(rows.values()))
    action_part = torch.baddbmm(biases[0], actions.expand(critics, -1, -1), w_action).unsqueeze(1)
    z = [(torch.matmul(states, w_state).unflatten(1, (-1, batch)) + action_part).flatten(1, 2)]
    for weight, bias in zip(weights[1:-1], biases[1:-1]):
        z.append(torch.baddbmm(bias, qf.activation_fn(z[-1]), weight))
    terms["q"] = torch.baddbmm(biases[-1], qf.activation_fn(z[-1][:, :batch]), weights[-1]).squeeze(-1)  # s rows
    slopes, bends = zip(*(ACTIVATION_DERIVATIVES[qf.activation](z_l) for z_l in z))  # sigma'(z_l), sigma''(z_l)
    # reverse sweep: adjoints[l] = dQ/dh_l from dQ/dh_last = w_out down to g = (dQ/dh_0 * sigma'(z_0)) W_a^T
    adjoints = [weights[-1].transpose(1, 2)]
    for layer in range(len(z) - 1, 0, -1):
        adjoints.insert(0, torch.bmm(adjoints[0] * slopes[layer], weights[layer].transpose(1, 2)))
    g_rows = torch.bmm(adjoints[0] * slopes[0], w_action.transpose(1, 2)).unflatten(1, (-1, batch))
    g = {name: g_rows[:, index] for index, name in enumerate(rows)}  # g[name]: (critics, B, d_a) at rows[name]
    if "s+eps" in g:
        terms["mpr"] = (g["s"] - g["s+eps"]).square().mean((1, 2)).sum()
    if "s'" in g:
        terms["vfc"] = (g["s"] - g["s'"]).square().mean((1, 2)).sum()
    if probes is not None:  # forward mode on the s rows: tangent_l = dz_l/dt along a + t v, then
        # v^T H v = d2Q/dt2 = sum_l <dQ/dh_l, sigma''(z_l) * tangent_l^2>, reusing the adjoints. Under ReLU
        # sigma'' = 0, so v^T H v = 0 and curv = relu(delta): a constant with no gradient (resolve_pave_args warns)
        tangents = [torch.bmm(probes.expand(critics, -1, -1), w_action)]
        for layer in range(1, len(z)):
            tangents.append(torch.bmm(slopes[layer - 1][:, :batch] * tangents[-1], weights[layer]))
        probe_curvature = sum((adjoint[:, :batch] * bend[:, :batch] * tangent.square()).sum(-1)
                              for adjoint, bend, tangent in zip(adjoints, bends, tangents))
        terms["curv"] = torch.relu(probe_curvature + delta).mean(1).sum()
    return terms


# ===== PAVE end =====


def main(args: Args) -> dict:
    args = resolve_args(args)
    # ===== PAVE begin =====
    args = resolve_pave_args(args)
    pave_terms_fn = compile_with_fallback(pave_terms, "the PAVE loss", "--no-pave-compile") \
        if args.pave_compile and any((args.lam_mpr, args.lam_vfc, args.lam_curv)) else pave_terms
    # ===== PAVE end =====
    run_name = args.run_name or (args.resume and find_resumable_run(args.env_id, args.exp_name, args.seed)) or \
        f"{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}"
    run_dir = f"runs/{run_name}"
    checkpoint_path = os.path.join(run_dir, CHECKPOINT_FILE)
    stop_signals = StopSignals(checkpoint_path)  # SIGINT/SIGTERM: save a checkpoint at the end of the step, then exit
    checkpoint = load_checkpoint(checkpoint_path, SCRIPT, args.env_id) \
        if args.resume and os.path.exists(checkpoint_path) else None
    # resumable at any step: a checkpoint replays the current episode's actions (README: Reproducibility); a bad env
    # id or space fails here, before anything is printed
    env = ResumableEnv(make_env(args.env_id, args.seed, args.capture_video, run_name))
    eval_env = make_env(args.env_id, args.seed + EVAL_SEED_OFFSET)
    # the resolved configuration: the run's own name, and whether it trains on a GPU
    config = jsonable(dataclasses.asdict(dataclasses.replace(
        args, run_name=run_name, cuda=args.cuda and torch.cuda.is_available())))
    print(f"{SCRIPT}: {run_name}" + (f" (resuming at step {checkpoint['global_step']})" if checkpoint else
                                      " (no checkpoint to resume; starting fresh)" if args.resume else ""))
    print(json.dumps(config, indent=2))
    if args.track:
        import wandb

        wandb.init(
            project=args.wandb_project_name,
            entity=args.wandb_entity,
            group=args.wandb_group or f"{args.env_id}__{args.exp_name}",  # the seeds of one cell together (README)
            tags=list(dict.fromkeys([args.env_id, args.exp_name, *args.wandb_tags])),
            sync_tensorboard=True,
            config=config,
            name=run_name,
            id=hashlib.sha1(run_name.encode()).hexdigest()[:16],  # stable, so a resumed run continues the same one
            resume="allow",
            save_code=True,
        )
        # every chart against env steps (the scalars' global_step), not W&B's own count of its log calls
        wandb.define_metric("global_step")
        wandb.define_metric("*", step_metric="global_step")
    # purge_step drops events a killed run logged after its checkpoint, so the resumed curve continues cleanly
    writer = SummaryWriter(run_dir, purge_step=checkpoint["global_step"] + 1 if checkpoint else None)
    writer.add_text(
        "hyperparameters",
        "|param|value|\n|-|-|\n%s" % ("\n".join([f"|{key}|{value}|" for key, value in config.items()])),
    )

    # TRY NOT TO MODIFY: seeding
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    torch.set_num_threads(args.threads)
    numpy_rng = np.random.default_rng(args.seed)
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")
    graphs = args.cudagraphs and device.type == "cuda"
    if args.cudagraphs and not graphs:
        print("warning: --cudagraphs needs a GPU; on the CPU the losses are only compiled", file=sys.stderr)
    torch_generator = torch.Generator(device).manual_seed(args.seed)

    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    action_low, action_high = env.action_space.low.astype(np.float64), env.action_space.high.astype(np.float64)
    actor, qf = make_agent(args, obs_dim, act_dim)
    actor, qf = actor.to(device), qf.to(device)
    qf_target = copy.deepcopy(qf)
    # fused Adam updates all parameters in one kernel: measured fastest on CPU (README, "Speed"); capturable keeps its
    # step count on the device, so that a CUDA graph can record the step
    q_optimizer = torch.optim.Adam(qf.parameters(), lr=args.learning_rate, fused=True, capturable=graphs)
    actor_optimizer = torch.optim.Adam(actor.parameters(), lr=args.learning_rate, fused=True, capturable=graphs)
    online_params, target_params = list(qf.parameters()), list(qf_target.parameters())
    actor_params = list(actor.parameters())
    rb = ReplayBuffer(args.buffer_size, {"obs": (obs_dim,), "actions": (act_dim,), "rewards": (),
                                         "next_obs": (obs_dim,), "dones": ()}, device)

    def critic_loss_fn(data: dict, next_noise: torch.Tensor, qf_a_values: torch.Tensor) -> torch.Tensor:
        """Per-critic TD losses (2,): MSE of qf_a_values = Q(s, a), (2, B), against the soft clipped double-Q target."""
        with torch.no_grad():
            next_actions, next_log_pi = actor.get_action(data["next_obs"], next_noise)
            min_qf_next_target = qf_target(data["next_obs"], next_actions).min(0).values - args.alpha * next_log_pi
            next_q_value = data["rewards"] + (1.0 - data["dones"]) * args.gamma * min_qf_next_target
        return ((qf_a_values - next_q_value) ** 2).mean(1)

    def actor_loss_fn(data: dict, noise: torch.Tensor) -> torch.Tensor:
        actions, log_pi = actor.get_action(data["obs"], noise)
        return (args.alpha * log_pi - qf(data["obs"], actions).min(0).values).mean()

    if args.compile or args.cudagraphs:
        opt_out = "--no-compile --no-cudagraphs"
        critic_loss_fn = compile_with_fallback(critic_loss_fn, "the critic loss", opt_out)
        actor_loss_fn = compile_with_fallback(actor_loss_fn, "the actor loss", opt_out)

    # NaN/Inf losses flagged on the device inside the updates, read at the logging interval
    nonfinite_guard = NonFiniteGuard()

    def update(data: dict) -> dict[str, torch.Tensor]:
        """One gradient step of the twin critics, then of the actor, then the critic target's Polyak update, on one
        batch; returns the losses to log."""
        noises = torch.randn((2, *data["actions"].shape), generator=torch_generator, device=device)
        # ===== PAVE begin =====
        # each term gets its input only when its weight is on: eps ~ N(0, sigma^2 I) for MPR, s' for VFC, a
        # Rademacher v for Curv (eps and v shared by both critics)
        pave_noise = args.pave_sigma * torch.randn(data["obs"].shape, generator=torch_generator,
                                                   device=device) if args.lam_mpr else None
        pave_next_obs = data["next_obs"] if args.lam_vfc else None
        pave_probes = torch.randint(0, 2, data["actions"].shape, generator=torch_generator, device=device,
                                    dtype=data["actions"].dtype).mul_(2).sub_(1) if args.lam_curv else None
        pave = pave_terms_fn(qf, data["obs"], data["actions"], pave_noise, pave_next_obs, pave_probes,
                             args.pave_delta)
        pave_weighted = {"pave_mpr": args.lam_mpr * pave["mpr"], "pave_vfc": args.lam_vfc * pave["vfc"],
                         "pave_curv": args.lam_curv * pave["curv"]}
        nonfinite_guard.check(**pave_weighted)  # so that a stop names the term that went NaN/Inf
        qf_losses = critic_loss_fn(data, noises[0], pave["q"])  # Q(s, a) from PAVE's forward: no second pass
        qf_loss = 0.5 * qf_losses.sum() + sum(pave_weighted.values())  # SB3's 0.5, which the lambdas assume
        # ===== PAVE end =====

        q_optimizer.zero_grad(set_to_none=True)
        qf_loss.backward()
        # fused Adam skips the update if a loss is NaN/Inf (its found_inf input), so the critic stays finite
        q_optimizer.found_inf = nonfinite_guard.check(qf1_loss=qf_losses[0], qf2_loss=qf_losses[1], qf_loss=qf_loss)
        q_optimizer.step()

        actor_loss = actor_loss_fn(data, noises[1])
        # ===== LipsNet begin =====
        lipsnet_penalty, lipsnet_k_mean = lipsnet_k_penalty(actor, data)
        actor_loss = actor_loss + args.lam_k * lipsnet_penalty
        # ===== LipsNet end =====
        actor_optimizer.zero_grad(set_to_none=True)
        actor_loss.backward(inputs=actor_params)  # the critic's weights need no gradient here
        actor_optimizer.found_inf = nonfinite_guard.check(actor_loss=actor_loss)
        actor_optimizer.step()

        # update the target network, all parameters in one fused in-place call
        with torch.no_grad():
            torch._foreach_lerp_(target_params, online_params, args.tau)
        # the losses to log as losses/<name> (a method adds its terms with logged.update)
        logged = {"qf1_loss": qf_losses[0], "qf2_loss": qf_losses[1], "qf_loss": qf_loss, "actor_loss": actor_loss}
        # ===== PAVE + LipsNet begin =====
        logged.update(pave_mpr=pave["mpr"], pave_vfc=pave["vfc"], pave_curv=pave["curv"])
        logged.update(lipsnet_k_penalty=lipsnet_penalty, lipsnet_k_mean=lipsnet_k_mean)
        # ===== PAVE + LipsNet end =====
        return logged

    def act(obs: torch.Tensor) -> torch.Tensor:
        """An action of the stochastic policy for a batch of one observation."""
        with torch.no_grad():
            noise = torch.randn((1, act_dim), generator=torch_generator, device=device)
            return actor.get_action(obs, noise)[0]

    if graphs:  # --cudagraphs on a GPU: each function recorded once as a CUDA graph, then replayed (README "GPU")
        update = CudaGraphed(update, torch_generator, "the update")
        act = CudaGraphed(act, torch_generator, "the acting policy")

    def policy(obs: np.ndarray) -> np.ndarray:
        """Deterministic env-scale action, for evaluation."""
        with torch.no_grad():
            action = actor.deterministic_action(torch.as_tensor(obs, dtype=torch.float32, device=device)[None])[0]
        return to_env_action(action.cpu().numpy(), action_low, action_high)

    # TRY NOT TO MODIFY: start the game
    obs, _ = env.reset(seed=args.seed)
    # everything the rest of the run depends on: a checkpoint saves these parts, a resume restores them, so a run
    # interrupted any number of times ends with the numbers of its uninterrupted run (README: Reproducibility)
    stateful = {"actor": actor, "qf": qf, "qf_target": qf_target, "actor_optimizer": actor_optimizer,
                "q_optimizer": q_optimizer, "replay_buffer": rb,
                "random_streams": RandomStreams(numpy_rng, torch_generator), "training_env": env,
                "nonfinite_guard": nonfinite_guard}

    def checkpoint_payload(global_step: int) -> dict:
        return {
            "script": SCRIPT, "env_id": args.env_id, "args": config, "obs_dim": obs_dim, "act_dim": act_dim,
            "global_step": global_step, **checkpoint_state(stateful), "eval_history": eval_history,
            "last_eval_obs": last_eval_obs, "wall_time_s": wall_time_before + time.time() - start_time,
            "segments": segments,
        }

    start_step, eval_history, wall_time_before, last_eval_obs, segments = 0, [], 0.0, None, []
    if checkpoint:
        restore_state(stateful, checkpoint, checkpoint_path)  # the training env replays its episode to this step
        obs = env.observation
        for group in (*actor_optimizer.param_groups, *q_optimizer.param_groups):
            # this invocation's flags win over the saved values
            group["lr"], group["capturable"] = args.learning_rate, graphs
        start_step, eval_history, last_eval_obs = checkpoint["global_step"], checkpoint["eval_history"], \
            checkpoint["last_eval_obs"]
        wall_time_before, segments = checkpoint["wall_time_s"], checkpoint["segments"]

    segments = resumed_segments(segments, segment(start_step, device))

    start_time = time.time()
    checkpoints = CheckpointSchedule(args.checkpoint_freq, args.checkpoint_minutes, args.total_timesteps)
    progress = Progress(args.total_timesteps, start_step, args.learning_starts, args.progress_interval)
    videos = WandbVideos(f"videos/{run_name}") if args.track and args.capture_video else None
    for global_step in range(start_step + 1, args.total_timesteps + 1):
        # ALGO LOGIC: put action logic here
        if global_step <= args.learning_starts:
            action = numpy_rng.uniform(-1.0, 1.0, act_dim)
        else:
            action = act(torch.as_tensor(obs, dtype=torch.float32, device=device)[None])[0].cpu().numpy()

        # TRY NOT TO MODIFY: execute the game and log data.
        next_obs, reward, terminated, truncated, info = env.step(to_env_action(action, action_low, action_high))
        if "episode" in info:
            writer.add_scalar("charts/episodic_return", info["episode"]["r"], global_step)
            writer.add_scalar("charts/episodic_length", info["episode"]["l"], global_step)
            progress.record_return(info["episode"]["r"])
            if videos:
                videos.log_new(global_step)

        # TRY NOT TO MODIFY: store the true next obs; only termination (not time-limit truncation) stops bootstrapping
        rb.add(obs=obs, actions=action, rewards=reward, next_obs=next_obs, dones=terminated)
        obs = env.reset()[0] if terminated or truncated else next_obs

        # ALGO LOGIC: training.
        if global_step > args.learning_starts and global_step % args.train_freq == 0:
            for _ in range(args.gradient_steps):
                data = rb.sample(args.batch_size, torch_generator)
                logged = update(data)

            if global_step % args.log_freq == 0:
                writer.add_scalar("losses/qf1_values", qf(data["obs"], data["actions"])[0].mean().item(), global_step)
                for name, value in logged.items():
                    writer.add_scalar(f"losses/{name}", value.item(), global_step)
                writer.add_scalar("losses/alpha", args.alpha, global_step)
                writer.add_scalar("charts/SPS", progress.sps(global_step), global_step)

        if (args.eval_freq and global_step % args.eval_freq == 0) or global_step == args.total_timesteps:
            evaluation = evaluate(policy, eval_env, args.eval_episodes, args.seed + EVAL_SEED_OFFSET)
            summary, last_eval_obs = summarize(evaluation), [torch.from_numpy(o) for o in evaluation["observations"]]
            eval_history.append(log_evaluation(writer, summary, global_step))  # eval/* scalars; results.json's curve
            sps = progress.sps(global_step)
            print(f"step {global_step}/{args.total_timesteps}  eval return {summary['return_mean']:.2f} "
                  f"+- {summary['return_std']:.2f}  smoothness {summary['smoothness_mean']:.4f}  SPS {sps}")

        if args.geometry_freq and global_step % args.geometry_freq == 0 and last_eval_obs is not None:
            geometry = geometry_metrics(lambda o, a: qf(o, a)[0], actor.deterministic_action,
                                        [torch.as_tensor(o, device=device) for o in last_eval_obs])
            for key, value in geometry.items():
                writer.add_scalar(f"geometry/{key}", value, global_step)

        # the guard's only host sync: at the logging interval, after this step's evaluation so a stop keeps it
        if global_step % args.log_freq == 0 or global_step == args.total_timesteps:
            nonfinite_stop = nonfinite_guard.stop_message(global_step, checkpoint_path)
            if nonfinite_stop:
                atomic_torch_save(checkpoint_payload(global_step), checkpoint_path)
                writer.close()
                raise SystemExit(nonfinite_stop)

        stopping = stop_signals.received is not None and global_step < args.total_timesteps
        if checkpoints.due(global_step) or stopping:
            atomic_torch_save(checkpoint_payload(global_step), checkpoint_path)
        if stopping:  # SIGINT or SIGTERM: one line saying where the checkpoint is and how to resume, no traceback
            writer.close()
            sys.exit(stop_signals.stop(global_step, resume_command(__file__, run_name, args.env_id, args.seed)))
        progress.step(global_step)

    if start_step >= args.total_timesteps:  # resumed from a checkpoint of the last step: the loop did not run
        summary = summarize(evaluate(policy, eval_env, args.eval_episodes, args.seed + EVAL_SEED_OFFSET))
    wall_time = wall_time_before + time.time() - start_time
    if args.save_model:
        model_path = f"{run_dir}/{args.exp_name}.cleanrl_model"
        atomic_torch_save({key: value for key, value in checkpoint_payload(args.total_timesteps).items()
                           if key in ("script", "env_id", "args", "obs_dim", "act_dim", "actor", "qf")}, model_path)
        print(f"model saved to {model_path}")
    results = write_results(
        f"{run_dir}/results.json", script=SCRIPT, config=config, run_name=run_name,
        global_step=args.total_timesteps, wall_time_s=wall_time,
        sps=(args.total_timesteps - start_step) / max(time.time() - start_time, 1e-9),
        final_eval=summary, eval_history=eval_history, segments=segments,
    )
    env.close()
    if videos:
        videos.log_new(args.total_timesteps)
    eval_env.close()
    writer.close()
    if args.track:
        wandb.finish()
    stop_signals.restore()
    progress.finish(run_dir)
    return results


if __name__ == "__main__":
    main(tyro.cli(Args))
