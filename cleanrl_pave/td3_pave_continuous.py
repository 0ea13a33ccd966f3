# ===== PAVE begin =====
# PAVE on TD3 (Lee et al., ICML 2026; SPEC section 1): the critic loss gains three terms on the critics' action
# gradient field (MPR, VFC, Curv); the actor is untouched.
# ===== PAVE end =====
# TD3 with the paper's "SiLU-unified" backbone (PAVE, ICML 2026; SPEC section 2), CleanRL style.
# Reference: Fujimoto et al. 2018, "Addressing Function Approximation Error in Actor-Critic Methods".
import copy
import dataclasses
import hashlib
import json
import os
import random
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

from cleanrl_pave.checkpointing import (
    CHECKPOINT_FILE,
    atomic_torch_save,
    find_resumable_run,
    jsonable,
    load_checkpoint,
    restore_rng_state,
    rng_state,
)
from cleanrl_pave.critic_geometry import geometry_metrics
from cleanrl_pave.evaluation import EVAL_SEED_OFFSET, evaluate, summarize, write_results
from cleanrl_pave.monitoring import Progress, WandbVideos

SCRIPT = os.path.basename(__file__)[: -len(".py")]


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
    track: bool = False
    """if toggled, this experiment will be tracked with Weights and Biases"""
    wandb_project_name: str = "cleanrl_pave"
    """the wandb's project name"""
    wandb_entity: Optional[str] = None
    """the entity (team) of wandb's project"""
    wandb_group: Optional[str] = None
    """the wandb group of this run (the benchmark runner sets it to the suite name)"""
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
    """total timesteps of the experiments (paper default per env, see PAPER_ENV_SETTINGS)"""
    learning_rate: float = 1e-3
    """the learning rate of the actor and critic optimizers"""
    buffer_size: Optional[int] = None
    """the replay memory buffer size (paper default per env)"""
    gamma: Optional[float] = None
    """the discount factor gamma (paper default per env)"""
    tau: float = 0.005
    """target smoothing coefficient"""
    batch_size: int = 256
    """the batch size of sample from the replay memory"""
    policy_noise: float = 0.2
    """the scale of policy noise"""
    exploration_noise: float = 0.1
    """the scale of exploration noise"""
    learning_starts: int = 10_000
    """number of uniformly random warm-up steps before learning starts"""
    policy_frequency: int = 2
    """the frequency of training the actor and updating the targets (delayed)"""
    noise_clip: float = 0.5
    """noise clip parameter of the Target Policy Smoothing Regularization"""
    hidden_sizes: tuple[int, ...] = (400, 300)
    """hidden layer sizes of the actor and of each critic"""
    activation: Literal["silu", "relu"] = "silu"
    """hidden activation of actor and critics (the paper uses SiLU for every method)"""
    # ===== PAVE begin =====
    lam_mpr: Optional[float] = None
    """PAVE weight lambda_1 of the mixed-partial term MPR (paper value per env, SPEC section 4)"""
    lam_vfc: Optional[float] = None
    """PAVE weight lambda_2 of the vector-field-consistency term VFC (paper value per env)"""
    lam_curv: Optional[float] = None
    """PAVE weight lambda_3 of the curvature term Curv (paper value per env)"""
    pave_sigma: float = 0.01
    """std of the MPR state perturbation eps ~ N(0, sigma^2 I), in raw observation units"""
    pave_delta: float = 1.0
    """curvature margin delta of Curv = sum_i mean relu(v^T H_i v + delta)"""
    # ===== PAVE end =====


# Settings of the release (paper Tables 7-8) for the paper's envs; an explicit flag always wins.
DEFAULT_ENV_SETTINGS = {"total_timesteps": 1_000_000, "gamma": 0.99, "buffer_size": 1_000_000}
PAPER_ENV_SETTINGS = {
    "Pendulum-v1": {"total_timesteps": 100_000, "gamma": 0.98, "buffer_size": 200_000},
    "LunarLanderContinuous-v3": {"total_timesteps": 500_000, "gamma": 0.98, "buffer_size": 200_000},
    "Reacher-v5": {"total_timesteps": 500_000},
}


def resolve_args(args: Args) -> Args:
    """Fill every unset (None) setting with the paper's value for this env, then reject impossible values."""
    paper = {**DEFAULT_ENV_SETTINGS, **PAPER_ENV_SETTINGS.get(args.env_id, {})}
    args = dataclasses.replace(args, **{key: value for key, value in paper.items() if getattr(args, key) is None})
    for name in ("total_timesteps", "buffer_size", "batch_size", "eval_episodes", "log_freq", "policy_frequency",
                 "threads"):
        if getattr(args, name) <= 0:
            raise SystemExit(f"error: --{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    for name in ("learning_starts", "eval_freq", "checkpoint_freq", "geometry_freq", "progress_interval"):
        if getattr(args, name) < 0:
            raise SystemExit(f"error: --{name.replace('_', '-')} must be non-negative, got {getattr(args, name)}")
    if args.log_freq % args.policy_frequency:
        raise SystemExit(f"error: --log-freq ({args.log_freq}) must be a multiple of --policy-frequency "
                         f"({args.policy_frequency}) so that every logged step has an actor loss")
    if not args.hidden_sizes or min(args.hidden_sizes) <= 0:
        raise SystemExit(f"error: --hidden-sizes must be positive integers, got {args.hidden_sizes}")
    return args


def make_env(env_id: str, seed: int, capture_video: bool = False, run_name: str = "") -> gym.Env:
    """One env with episode statistics; a clear one-line error for ids, spaces or extras we cannot use."""
    try:
        env = gym.make(env_id, render_mode="rgb_array" if capture_video else None)
    except gym.error.DependencyNotInstalled as error:
        extra = "box2d" if "box2d" in str(error).lower() else "mujoco"
        raise SystemExit(f"error: {env_id} needs an optional dependency: pip install 'cleanrl_pave[{extra}]' ({error})")
    except gym.error.Error as error:
        raise SystemExit(f"error: unknown environment id {env_id!r}: {error}")
    if not isinstance(env.action_space, gym.spaces.Box):
        raise SystemExit(f"error: {env_id} has a {type(env.action_space).__name__} action space; "
                         "these scripts need a continuous (Box) one")
    if not (np.all(np.isfinite(env.action_space.low)) and np.all(np.isfinite(env.action_space.high))):
        raise SystemExit(f"error: {env_id} has unbounded actions; the actor's tanh output needs finite bounds")
    if capture_video:
        try:
            env = gym.wrappers.RecordVideo(env, f"videos/{run_name}")
        except gym.error.DependencyNotInstalled as error:
            raise SystemExit(f"error: --capture-video needs MoviePy: pip install 'cleanrl_pave[video]' ({error})")
    env = gym.wrappers.RecordEpisodeStatistics(env)
    env.action_space.seed(seed)
    return env


def to_env_action(action: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Map an action in the networks' [-1, 1] space to the env's [low, high] box."""
    return low + (action + 1.0) * 0.5 * (high - low)


ACTIVATIONS = {"silu": nn.SiLU, "relu": nn.ReLU}


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
        self.activation_fn = {"silu": F.silu, "relu": F.relu}[activation]
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
        for index, (weight, bias) in enumerate(zip(self.weights, self.biases)):
            x = torch.baddbmm(bias, x, weight)
            if index < last:
                x = self.activation_fn(x)
        return x.squeeze(-1)


class Actor(nn.Module):
    """Deterministic policy: MLP with a tanh output, acting in the [-1, 1] action space."""

    def __init__(self, obs_dim: int, act_dim: int, hidden_sizes, activation: str):
        super().__init__()
        self.net = mlp([obs_dim, *hidden_sizes, act_dim], activation)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(obs))

    def deterministic_action(self, obs: torch.Tensor) -> torch.Tensor:
        return self(obs)


def make_agent(args: Args, obs_dim: int, act_dim: int) -> tuple[Actor, QNetwork]:
    """The actor and the twin critic of this script (used for training and to reload saved models)."""
    actor = Actor(obs_dim, act_dim, args.hidden_sizes, args.activation)
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
        return {"storage": self.storage[: self.size].clone(), "pos": self.pos, "size": self.size}

    def load_state_dict(self, state: dict) -> None:
        self.pos, self.size = state["pos"], state["size"]
        self.storage[: self.size] = state["storage"]


# ===== PAVE begin =====
# The release's per-env PAVE weights (paper Tables 7-8, SPEC section 4) for this backbone: (MPR, VFC, Curv); an env not
# listed uses PAVE_DEFAULT_WEIGHTS, the start of the paper's coordinate search.
PAVE_DEFAULT_WEIGHTS = {"lam_mpr": 0.1, "lam_vfc": 0.1, "lam_curv": 0.01}
PAVE_ENV_WEIGHTS = {
    "Ant-v5": {"lam_mpr": 0.1, "lam_vfc": 0.005, "lam_curv": 0.5},
    "Hopper-v5": {"lam_mpr": 0.1, "lam_vfc": 0.005, "lam_curv": 0.5},
    "Humanoid-v5": {"lam_mpr": 0.1, "lam_vfc": 0.005, "lam_curv": 0.5},
    "LunarLanderContinuous-v3": {"lam_mpr": 0.1, "lam_vfc": 0.1, "lam_curv": 0.01},
    "Pendulum-v1": {"lam_mpr": 2.0, "lam_vfc": 0.005, "lam_curv": 2.0},
    "Reacher-v5": {"lam_mpr": 0.1, "lam_vfc": 0.1, "lam_curv": 0.01},
    "Walker2d-v5": {"lam_mpr": 0.1, "lam_vfc": 0.1, "lam_curv": 0.01},
}
# the critic losses the non-finite guard watches, in the order of the on-device flags
PAVE_GUARDED_LOSSES = ("qf1_loss", "qf2_loss", "pave_mpr", "pave_vfc", "pave_curv", "qf_loss")


def resolve_pave_args(args: Args) -> Args:
    """Fill unset PAVE weights with the paper's value for this env (an explicit flag wins), then check them."""
    weights = {**PAVE_DEFAULT_WEIGHTS, **PAVE_ENV_WEIGHTS.get(args.env_id, {})}
    args = dataclasses.replace(args, **{key: value for key, value in weights.items() if getattr(args, key) is None})
    for name in ("lam_mpr", "lam_vfc", "lam_curv", "pave_sigma"):
        value = getattr(args, name)
        if not (np.isfinite(value) and value >= 0):
            raise SystemExit(f"error: --{name.replace('_', '-')} must be a finite non-negative number, got {value}")
    if not np.isfinite(args.pave_delta):
        raise SystemExit(f"error: --pave-delta must be finite, got {args.pave_delta}")
    return args


def _activation_jet(z: torch.Tensor, activation: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(sigma(z), sigma'(z), sigma''(z)) in closed form: SiLU from one sigmoid, ReLU with sigma'' = 0."""
    if activation == "relu":
        positive = (z > 0).to(z.dtype)
        return z * positive, positive, torch.zeros_like(z)
    s = torch.sigmoid(z)
    h = z * s
    sigmoid_slope = torch.rsub(s, 1)  # 1 - s here, s (1 - s) = sigmoid' after the mul_ below
    d1 = torch.addcmul(s, h, sigmoid_slope)  # s + z s (1 - s)
    sigmoid_slope.mul_(s)
    d2 = torch.rsub(s, 1, alpha=2).mul_(z).add_(2).mul_(sigmoid_slope)  # s (1 - s) (2 + z (1 - 2 s))
    return h, d1, d2


def _activation_third_derivative(z: torch.Tensor, activation: str) -> torch.Tensor:
    """sigma'''(z): for SiLU s (1 - s) ((1 - 2 s)(3 + z (1 - 2 s)) - 2 z s (1 - s)); 0 for ReLU."""
    if activation == "relu":
        return torch.zeros_like(z)
    s = torch.sigmoid(z)
    sigmoid_slope = torch.rsub(s, 1).mul_(s)
    centre = torch.rsub(s, 1, alpha=2)
    return (centre * z).add_(3).mul_(centre).addcmul_(z, sigmoid_slope, value=-2).mul_(sigmoid_slope)


def _accumulate(total: Optional[torch.Tensor], term: torch.Tensor) -> torch.Tensor:
    """total + term (in place), where total may still be None."""
    return term if total is None else total.add_(term)


class PaveTermsFunction(torch.autograd.Function):
    """The PAVE terms of the stacked twin critic, with the derivatives of the MLP written out.

    For each critic, hidden layers l = 0..n-1 with pre-activations z_l, d1_l = sigma'(z_l), d2_l = sigma''(z_l):
    - g = dQ/da by an explicit reverse pass: alpha_{n-1} = w_last, e_l = alpha_l * d1_l (= dQ/dz_l),
      alpha_{l-1} = e_l W_l^T (= dQ/dh_{l-1}), g = e_0 W_0a^T with W_0a the action rows of W_0;
    - v^T H v = d^2/dt^2 Q(s, a + t v) by forward mode: tangents t_0 = v W_0a, t_l = (d1_{l-1} * t_{l-1}) W_l; the
      second-order tangents start at 0 and propagate linearly, so v^T H v = sum_l <alpha_l, d2_l * t_l^2>, which
      reuses the adjoints (one extra matmul per hidden layer after the first, no second reverse pass).
    The rows stack the states [s; s + eps; s'] (those the enabled terms need), all with the stored action, so the
    action part a W_0a + b_0 of the first layer is computed once; Curv lives on the s rows.
    backward() is the gradient of the terms with respect to every critic parameter, derived by hand (Curv needs
    sigma'''): autograd would record and replay every elementwise product of sigma' and sigma''. It is checked against
    a plain double/triple-backward autograd reference in tests/test_pave.py.
    """

    @staticmethod
    def forward(ctx, config, obs, actions, next_obs, state_noise, probes, *params):
        activation, use_mpr, use_vfc, use_curv, delta = config
        weights, biases = params[: len(params) // 2], params[len(params) // 2:]
        hidden, critics = len(weights) - 1, weights[0].shape[0]
        batch, obs_dim = obs.shape
        w_state, w_action = weights[0][:, :obs_dim], weights[0][:, obs_dim:]
        states = [obs, *([obs + state_noise] if use_mpr else []), *([next_obs] if use_vfc else [])]
        n_states = len(states)
        stacked_states = torch.cat(states)
        stacked_actions = actions.expand(critics, *actions.shape)

        # forward pass (the first layer's action part is shared by the states)
        action_part = torch.baddbmm(biases[0], stacked_actions, w_action)
        z = torch.matmul(stacked_states, w_state).view(critics, n_states, batch, -1).add_(action_part.unsqueeze(1))
        z = z.view(critics, n_states * batch, -1)
        acts, d1s, d2s, s_pre_acts = [], [], [], []
        for layer in range(hidden):
            h, d1, d2 = _activation_jet(z, activation)
            acts.append(h)
            d1s.append(d1)
            d2s.append(d2)
            s_pre_acts.append(z[:, :batch])
            if layer + 1 < hidden:
                z = torch.baddbmm(biases[layer + 1], h, weights[layer + 1])

        # reverse pass of the scalar output: alphas[l] = dQ/dh_l, dq_dz[l] = dQ/dz_l
        alphas, dq_dz = [None] * hidden, [None] * hidden
        alphas[-1] = weights[-1].transpose(1, 2)  # (critics, 1, H): the same for every row
        for layer in range(hidden - 1, -1, -1):
            dq_dz[layer] = alphas[layer] * d1s[layer]
            if layer > 0:
                alphas[layer - 1] = torch.bmm(dq_dz[layer], weights[layer].transpose(1, 2))

        mpr = vfc = curv = obs.new_zeros(())
        grad_diffs = {}  # term -> (g(s) - g(other state), row block of the other state)
        if use_mpr or use_vfc:
            action_grad = torch.bmm(dq_dz[0], w_action.transpose(1, 2)).view(critics, n_states, batch, -1)
            per_critic_elements = batch * actions.shape[-1]  # MSE averages over batch and action dims
            if use_mpr:
                grad_diffs["mpr"] = (action_grad[:, 0] - action_grad[:, 1], 1)
                mpr = grad_diffs["mpr"][0].square().sum() / per_critic_elements
            if use_vfc:
                grad_diffs["vfc"] = (action_grad[:, 0] - action_grad[:, n_states - 1], n_states - 1)
                vfc = grad_diffs["vfc"][0].square().sum() / per_critic_elements

        tangents, hinge_active = [], None
        if use_curv:
            tangents.append(torch.bmm(probes.expand(critics, *probes.shape), w_action))
            for layer in range(1, hidden):
                tangents.append(torch.bmm(d1s[layer - 1][:, :batch] * tangents[-1], weights[layer]))
            probe_curvature = 0  # v^T H v, (critics, B)
            for layer in range(hidden):
                source = tangents[layer].square().mul_(d2s[layer][:, :batch])
                if layer < hidden - 1:
                    probe_curvature = probe_curvature + source.mul_(alphas[layer][:, :batch]).sum(-1)
                else:
                    probe_curvature = probe_curvature + torch.bmm(source, weights[-1]).squeeze(-1)
            shifted = probe_curvature + delta
            hinge_active = (shifted > 0).to(shifted.dtype)
            curv = torch.relu(shifted).sum() / batch  # sum over critics of the batch mean

        ctx.mark_non_differentiable(*(term for term, used in ((mpr, use_mpr), (vfc, use_vfc), (curv, use_curv))
                                      if not used))  # a term that is off is a constant 0
        ctx.config, ctx.sizes = config, (batch, n_states, obs_dim)
        ctx.save_for_backward(stacked_states, actions, probes, *weights)
        ctx.intermediates = (acts, d1s, d2s, s_pre_acts, alphas, dq_dz, tangents, hinge_active, grad_diffs)
        return mpr, vfc, curv

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_mpr, grad_vfc, grad_curv):
        activation, _, _, use_curv, _ = ctx.config
        batch, n_states, obs_dim = ctx.sizes
        stacked_states, actions, probes, *weights = ctx.saved_tensors
        acts, d1s, d2s, s_pre_acts, alphas, dq_dz, tangents, hinge_active, grad_diffs = ctx.intermediates
        hidden, critics = len(weights) - 1, weights[0].shape[0]
        stacked_actions = actions.expand(critics, *actions.shape)
        w_action = weights[0][:, obs_dim:]
        grad_w, grad_b = [None] * len(weights), [None] * len(weights)
        grad_w_action = None  # the action rows of W_0, gathered from three places

        # MPR and VFC: d loss / d g on every state row
        grad_dq_dz = None
        if grad_diffs:
            grad_action_grad = actions.new_zeros(critics, n_states, batch, actions.shape[-1])
            for name, grad_out in (("mpr", grad_mpr), ("vfc", grad_vfc)):
                if name in grad_diffs:
                    diff, row = grad_diffs[name]
                    contribution = diff * (grad_out * 2.0 / (batch * actions.shape[-1]))
                    grad_action_grad[:, 0] += contribution
                    grad_action_grad[:, row] -= contribution
            grad_action_grad = grad_action_grad.view(critics, n_states * batch, -1)
            grad_w_action = torch.bmm(grad_action_grad.transpose(1, 2), dq_dz[0])  # g = dq_dz_0 W_0a^T
            grad_dq_dz = torch.bmm(grad_action_grad, w_action)

        # Curv: back through the tangent chain, last layer first (s rows only)
        grad_alpha_curv, grad_d1_curv, grad_d2_curv = [None] * hidden, [None] * hidden, [None] * hidden
        if use_curv:
            grad_probe = hinge_active.mul(grad_curv / batch).unsqueeze(-1)  # d loss / d (v^T H v)
            grad_tangent = None
            for layer in range(hidden - 1, -1, -1):
                tangent, d2 = tangents[layer], d2s[layer][:, :batch]
                alpha = alphas[layer][:, :batch] if layer < hidden - 1 else alphas[layer]
                grad_times_tangent = grad_probe * tangent
                grad_times_tangent_sq = grad_times_tangent * tangent
                grad_alpha_curv[layer] = grad_times_tangent_sq * d2
                grad_d2_curv[layer] = grad_times_tangent_sq.mul_(alpha)
                grad_tangent = _accumulate(grad_tangent, grad_times_tangent.mul_(alpha).mul_(d2).mul_(2))
                if layer > 0:  # tangent_l = (d1_{l-1} * tangent_{l-1}) W_l
                    prev_tangent, prev_d1 = tangents[layer - 1], d1s[layer - 1][:, :batch]
                    grad_w[layer] = torch.bmm((prev_d1 * prev_tangent).transpose(1, 2), grad_tangent)
                    grad_scaled = torch.bmm(grad_tangent, weights[layer].transpose(1, 2))
                    grad_d1_curv[layer - 1] = grad_scaled * prev_tangent
                    grad_tangent = grad_scaled.mul_(prev_d1)
                else:  # tangent_0 = v W_0a
                    probe_rows = probes.expand(critics, *probes.shape).transpose(1, 2)
                    grad_w_action = _accumulate(grad_w_action, torch.bmm(probe_rows, grad_tangent))

        # back through the reverse pass, first layer first: dq_dz_l = alpha_l * d1_l, alpha_{l-1} = dq_dz_l W_l^T
        grad_d1 = [None] * hidden
        for layer in range(hidden):
            if grad_dq_dz is None:  # Curv alone: the s rows are all the rows
                grad_alpha, grad_d1[layer] = grad_alpha_curv[layer], grad_d1_curv[layer]
            else:
                grad_alpha = grad_dq_dz * d1s[layer]
                grad_d1[layer] = grad_dq_dz.mul_(alphas[layer])
                if use_curv:
                    grad_alpha[:, :batch] += grad_alpha_curv[layer]
                    if grad_d1_curv[layer] is not None:
                        grad_d1[layer][:, :batch] += grad_d1_curv[layer]
            if layer + 1 < hidden:
                grad_w[layer + 1] = _accumulate(grad_w[layer + 1],
                                                torch.bmm(grad_alpha.transpose(1, 2), dq_dz[layer + 1]))
                grad_dq_dz = torch.bmm(grad_alpha, weights[layer + 1])
            else:  # alpha_{n-1} = w_last, shared by every row
                grad_w[-1] = grad_alpha.sum(1).unsqueeze(-1)

        # back through the forward pass, last hidden layer first (Q itself does not enter the terms)
        grad_act = None
        for layer in range(hidden - 1, -1, -1):
            grad_z = None if grad_act is None else grad_act.mul_(d1s[layer])
            if grad_d1[layer] is not None:
                grad_z = grad_d1[layer].mul_(d2s[layer]) if grad_z is None else \
                    grad_z.addcmul_(grad_d1[layer], d2s[layer])
            if use_curv:
                third_term = grad_d2_curv[layer] * _activation_third_derivative(s_pre_acts[layer], activation)
                if grad_z is None:  # Curv alone, last hidden layer
                    grad_z = third_term
                else:
                    grad_z[:, :batch] += third_term
            if layer > 0:
                grad_w[layer] = _accumulate(grad_w[layer], torch.bmm(acts[layer - 1].transpose(1, 2), grad_z))
                grad_b[layer] = grad_z.sum(1, keepdim=True)
                grad_act = torch.bmm(grad_z, weights[layer].transpose(1, 2))
            else:  # z_0 = S W_0s + a W_0a + b_0, with a shared by the state rows
                grad_w_state = torch.matmul(stacked_states.t(), grad_z)
                grad_z_shared = grad_z.view(critics, n_states, batch, -1).sum(1)
                grad_w_action = _accumulate(grad_w_action, torch.bmm(stacked_actions.transpose(1, 2), grad_z_shared))
                grad_b[0] = grad_z_shared.sum(1, keepdim=True)
                grad_w[0] = torch.cat([grad_w_state, grad_w_action], 1)
        grad_b[-1] = grad_w[-1].new_zeros(critics, 1, 1)  # the output bias does not enter the terms
        return (None, None, None, None, None, None, *grad_w, *grad_b)


def pave_terms(qf: QNetwork, obs: torch.Tensor, actions: torch.Tensor, next_obs: torch.Tensor,
               state_noise: Optional[torch.Tensor], probes: Optional[torch.Tensor], lam_mpr: float, lam_vfc: float,
               lam_curv: float, delta: float) -> dict[str, torch.Tensor]:
    """The PAVE critic terms (SPEC section 1), each summed over the twin critics of the stacked `qf`:
      mpr  = sum_i MSE(g_i(s), g_i(s + eps)),  vfc = sum_i MSE(g_i(s), g_i(s')),  g_i = dQ_i/da at the stored a,
      curv = sum_i mean_batch relu(v^T H_i v + delta),  H_i = d2Q_i/da2 at (s, a).
    obs, next_obs, state_noise (eps, already scaled by sigma): (B, d_s); actions, probes (Rademacher v): (B, d_a).
    A term whose weight is 0 is not computed and comes back as a zero tensor (its noise / probes may then be None).
    The terms backpropagate into qf's parameters exactly as a double/triple backward through autograd would.
    """
    use_mpr, use_vfc, use_curv = lam_mpr != 0, lam_vfc != 0, lam_curv != 0
    if not (use_mpr or use_vfc or use_curv):
        zero = obs.new_zeros(())
        return {"mpr": zero, "vfc": zero, "curv": zero}
    config = (qf.activation, use_mpr, use_vfc, use_curv, float(delta))
    mpr, vfc, curv = PaveTermsFunction.apply(config, obs, actions, next_obs, state_noise, probes, *qf.weights,
                                             *qf.biases)
    return {"mpr": mpr, "vfc": vfc, "curv": curv}


def pave_nonfinite_message(flags: torch.Tensor, since_step: int, step: int, checkpoint_path: str) -> str:
    """The one-line stop message naming the critic losses that went NaN or Inf (flags: PAVE_GUARDED_LOSSES order)."""
    names = ", ".join(f"losses/{name}" for name, bad in zip(PAVE_GUARDED_LOSSES, flags.tolist()) if bad)
    return (f"error: non-finite critic loss ({names}) in an update between steps {since_step} and {step}: those "
            f"critic updates were skipped and the run stopped; the last finite state is saved in {checkpoint_path} "
            "(lower the PAVE weights, e.g. --lam-mpr/--lam-vfc/--lam-curv, and --resume)")


# ===== PAVE end =====
def main(args: Args) -> dict:
    args = resolve_args(args)
    # ===== PAVE begin =====
    args = resolve_pave_args(args)
    # ===== PAVE end =====
    run_name = args.run_name or (args.resume and find_resumable_run(args.env_id, args.exp_name, args.seed)) or \
        f"{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}"
    run_dir = f"runs/{run_name}"
    checkpoint_path = os.path.join(run_dir, CHECKPOINT_FILE)
    checkpoint = load_checkpoint(checkpoint_path, SCRIPT, args.env_id) \
        if args.resume and os.path.exists(checkpoint_path) else None
    config = jsonable(dataclasses.asdict(args))
    print(f"{SCRIPT}: {run_name}" + (f" (resuming at step {checkpoint['global_step']})" if checkpoint else
                                      " (no checkpoint to resume; starting fresh)" if args.resume else ""))
    print(json.dumps(config, indent=2))

    env = make_env(args.env_id, args.seed, args.capture_video, run_name)
    eval_env = make_env(args.env_id, args.seed + EVAL_SEED_OFFSET)
    if args.track:
        import wandb

        wandb.init(
            project=args.wandb_project_name,
            entity=args.wandb_entity,
            group=args.wandb_group,
            tags=list(args.wandb_tags),
            sync_tensorboard=True,
            config=config,
            name=run_name,
            id=hashlib.sha1(run_name.encode()).hexdigest()[:16],  # stable, so a resumed run continues the same one
            resume="allow",
            save_code=True,
        )
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
    torch_generator = torch.Generator(device).manual_seed(args.seed)

    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    action_low, action_high = env.action_space.low.astype(np.float64), env.action_space.high.astype(np.float64)
    actor, qf = make_agent(args, obs_dim, act_dim)
    actor, qf = actor.to(device), qf.to(device)
    actor_target, qf_target = copy.deepcopy(actor), copy.deepcopy(qf)
    # fused Adam updates all parameters in one kernel: measured fastest on CPU (README, "Speed")
    q_optimizer = torch.optim.Adam(qf.parameters(), lr=args.learning_rate, fused=True)
    actor_optimizer = torch.optim.Adam(actor.parameters(), lr=args.learning_rate, fused=True)
    online_params = [*actor.parameters(), *qf.parameters()]
    target_params = [*actor_target.parameters(), *qf_target.parameters()]
    actor_params = list(actor.parameters())
    rb = ReplayBuffer(args.buffer_size, {"obs": (obs_dim,), "actions": (act_dim,), "rewards": (),
                                         "next_obs": (obs_dim,), "dones": ()}, device)

    def critic_loss_fn(data: dict, target_noise: torch.Tensor) -> torch.Tensor:
        """Per-critic TD losses, shape (2,): MSE of each critic against the clipped double-Q target."""
        with torch.no_grad():
            clipped_noise = (target_noise * args.policy_noise).clamp(-args.noise_clip, args.noise_clip)
            next_actions = (actor_target(data["next_obs"]) + clipped_noise).clamp(-1.0, 1.0)
            min_qf_next_target = qf_target(data["next_obs"], next_actions).min(0).values
            next_q_value = data["rewards"] + (1.0 - data["dones"]) * args.gamma * min_qf_next_target
        qf_a_values = qf(data["obs"], data["actions"])
        return ((qf_a_values - next_q_value) ** 2).mean(1)

    def actor_loss_fn(data: dict) -> torch.Tensor:
        return -qf(data["obs"], actor(data["obs"]))[0].mean()

    if args.compile:
        critic_loss_fn, actor_loss_fn = torch.compile(critic_loss_fn), torch.compile(actor_loss_fn)

    def policy(obs: np.ndarray) -> np.ndarray:
        """Deterministic env-scale action, for evaluation."""
        with torch.no_grad():
            action = actor.deterministic_action(torch.as_tensor(obs, dtype=torch.float32, device=device)[None])[0]
        return to_env_action(action.cpu().numpy(), action_low, action_high)

    def checkpoint_payload(global_step: int) -> dict:
        return {
            "script": SCRIPT, "env_id": args.env_id, "args": config, "obs_dim": obs_dim, "act_dim": act_dim,
            "global_step": global_step, "actor": actor.state_dict(), "qf": qf.state_dict(),
            "actor_target": actor_target.state_dict(), "qf_target": qf_target.state_dict(),
            "actor_optimizer": actor_optimizer.state_dict(), "q_optimizer": q_optimizer.state_dict(),
            "replay_buffer": rb.state_dict(), "rng": rng_state(numpy_rng, torch_generator),
            "eval_history": eval_history, "wall_time_s": wall_time_before + time.time() - start_time,
        }

    start_step, eval_history, wall_time_before, last_eval_obs = 0, [], 0.0, None
    if checkpoint:
        for module, key in ((actor, "actor"), (qf, "qf"), (actor_target, "actor_target"), (qf_target, "qf_target"),
                            (actor_optimizer, "actor_optimizer"), (q_optimizer, "q_optimizer"), (rb, "replay_buffer")):
            module.load_state_dict(checkpoint[key])
        restore_rng_state(checkpoint["rng"], numpy_rng, torch_generator)
        start_step, eval_history = checkpoint["global_step"], checkpoint["eval_history"]
        wall_time_before = checkpoint["wall_time_s"]

    # ===== PAVE begin =====
    pave_terms_fn = torch.compile(pave_terms) if args.compile else pave_terms
    # which guarded loss (PAVE_GUARDED_LOSSES) went NaN/Inf since the last check, kept on the device
    pave_nonfinite = torch.zeros(len(PAVE_GUARDED_LOSSES), dtype=torch.bool, device=device)
    pave_checked_step = start_step
    # ===== PAVE end =====
    start_time = time.time()
    progress = Progress(args.total_timesteps, start_step, args.learning_starts, args.progress_interval)
    videos = WandbVideos(f"videos/{run_name}") if args.track and args.capture_video else None
    # TRY NOT TO MODIFY: start the game (a resumed run starts a fresh episode, seeded by its step)
    obs, _ = env.reset(seed=args.seed + start_step)
    for global_step in range(start_step + 1, args.total_timesteps + 1):
        # ALGO LOGIC: put action logic here
        if global_step <= args.learning_starts:
            action = numpy_rng.uniform(-1.0, 1.0, act_dim)
        else:
            with torch.no_grad():
                action = actor(torch.as_tensor(obs, dtype=torch.float32, device=device).unsqueeze(0))[0].cpu().numpy()
            action = np.clip(action + numpy_rng.normal(0.0, args.exploration_noise, act_dim), -1.0, 1.0)

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
        if global_step > args.learning_starts:
            data = rb.sample(args.batch_size, torch_generator)
            target_noise = torch.randn(data["actions"].shape, generator=torch_generator, device=device)
            qf_losses = critic_loss_fn(data, target_noise)
            qf_loss = qf_losses.sum()
            # ===== PAVE begin =====
            # eps ~ N(0, sigma^2 I) per sample and Rademacher probes v, each shared by both critics; drawn
            # only for the terms that are on, so that all-zero weights reproduce the base run exactly
            pave_noise = args.pave_sigma * torch.randn(data["obs"].shape, generator=torch_generator,
                                                       device=device) if args.lam_mpr else None
            pave_probes = torch.randint(0, 2, data["actions"].shape, generator=torch_generator, device=device,
                                        dtype=data["actions"].dtype).mul_(2).sub_(1) if args.lam_curv else None
            pave = pave_terms_fn(qf, data["obs"], data["actions"], data["next_obs"], pave_noise, pave_probes,
                                 args.lam_mpr, args.lam_vfc, args.lam_curv, args.pave_delta)
            pave_weighted = torch.stack([args.lam_mpr * pave["mpr"], args.lam_vfc * pave["vfc"],
                                         args.lam_curv * pave["curv"]])
            qf_loss = qf_loss + pave_weighted.sum()
            # NaN/Inf guard without a host sync: flag the losses on the device (read at the logging interval)
            # and have fused Adam skip this critic update if any is non-finite (its found_inf input, as under
            # GradScaler): the critic stays finite, so the checkpoint written when the run stops can be resumed
            pave_step_nonfinite = ~torch.cat([qf_losses, pave_weighted, qf_loss.reshape(1)]).isfinite()
            pave_nonfinite |= pave_step_nonfinite
            q_optimizer.found_inf = pave_step_nonfinite.any().float()
            # ===== PAVE end =====

            # optimize the model
            q_optimizer.zero_grad(set_to_none=True)
            qf_loss.backward()
            q_optimizer.step()

            if global_step % args.policy_frequency == 0:
                actor_loss = actor_loss_fn(data)
                actor_optimizer.zero_grad(set_to_none=True)
                actor_loss.backward(inputs=actor_params)  # the critic's weights need no gradient here
                actor_optimizer.step()

                # update the target networks, all parameters in one fused in-place call
                with torch.no_grad():
                    torch._foreach_lerp_(target_params, online_params, args.tau)

            if global_step % args.log_freq == 0:
                writer.add_scalar("losses/qf1_values", qf(data["obs"], data["actions"])[0].mean().item(), global_step)
                writer.add_scalar("losses/qf1_loss", qf_losses[0].item(), global_step)
                writer.add_scalar("losses/qf2_loss", qf_losses[1].item(), global_step)
                writer.add_scalar("losses/qf_loss", qf_loss.item() / 2.0, global_step)
                writer.add_scalar("losses/actor_loss", actor_loss.item(), global_step)
                # ===== PAVE begin =====
                writer.add_scalar("losses/pave_mpr", pave["mpr"].item(), global_step)
                writer.add_scalar("losses/pave_vfc", pave["vfc"].item(), global_step)
                writer.add_scalar("losses/pave_curv", pave["curv"].item(), global_step)
                # ===== PAVE end =====
                writer.add_scalar("charts/SPS", progress.sps(global_step), global_step)

        if (args.eval_freq and global_step % args.eval_freq == 0) or global_step == args.total_timesteps:
            evaluation = evaluate(policy, eval_env, args.eval_episodes, args.seed + EVAL_SEED_OFFSET)
            summary, last_eval_obs = summarize(evaluation), evaluation["observations"]
            eval_history.append({"step": global_step, **{key: summary[key] for key in (
                "return_mean", "return_std", "smoothness_mean", "smoothness_std", "action_change_mean")}})
            writer.add_scalar("eval/episodic_return", summary["return_mean"], global_step)
            writer.add_scalar("eval/smoothness", summary["smoothness_mean"], global_step)
            writer.add_scalar("eval/action_change", summary["action_change_mean"], global_step)
            sps = progress.sps(global_step)
            print(f"step {global_step}/{args.total_timesteps}  eval return {summary['return_mean']:.2f} "
                  f"+- {summary['return_std']:.2f}  smoothness {summary['smoothness_mean']:.4f}  SPS {sps}")

        if args.geometry_freq and global_step % args.geometry_freq == 0 and last_eval_obs is not None:
            geometry = geometry_metrics(lambda o, a: qf(o, a)[0], actor.deterministic_action,
                                        [torch.as_tensor(o, device=device) for o in last_eval_obs])
            for key, value in geometry.items():
                writer.add_scalar(f"geometry/{key}", value, global_step)

        # ===== PAVE begin =====
        # checked after this step's evaluation, so a stop keeps that evaluation in the checkpoint it writes
        if global_step % args.log_freq == 0 or global_step == args.total_timesteps:
            if pave_nonfinite.any():  # the guard's only host sync, at the logging interval
                atomic_torch_save(checkpoint_payload(global_step), checkpoint_path)
                writer.close()
                raise SystemExit(pave_nonfinite_message(pave_nonfinite, pave_checked_step + 1, global_step,
                                                        checkpoint_path))
            pave_checked_step = global_step
        # ===== PAVE end =====

        if args.checkpoint_freq and global_step % args.checkpoint_freq == 0 and global_step < args.total_timesteps:
            atomic_torch_save(checkpoint_payload(global_step), checkpoint_path)
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
        final_eval=summary, eval_history=eval_history,
    )
    env.close()
    if videos:
        videos.log_new(args.total_timesteps)
    eval_env.close()
    writer.close()
    if args.track:
        wandb.finish()
    progress.finish(run_dir)
    return results


if __name__ == "__main__":
    main(tyro.cli(Args))
