"""The default sampler's score GP, made fast: the same model as botorch's ``SingleTaskGP`` fitted by
``fit_gpytorch_mll`` (RBF kernel with ARD, botorch's dimension-scaled log-normal priors, standardised outcome,
L-BFGS-B from the last fit's hyperparameters), with four changes that leave the model as it was (the last two very
nearly):

- **an exact closed-form objective**: botorch's optimiser (its bounds, retries and iteration limit) is handed a closure
  that computes the same negative MAP marginal log likelihood and its gradient in numpy from one Cholesky factor
  (:func:`_exact_closure`), instead of gpytorch's autograd graph (10-20x the work per step);
- **one thread** (torch's and the BLAS libraries') while the sampler plans a model-based proposal (:func:`one_thread`):
  these are small matrices, and with the default two threads on a machine whose cores train, each step waited for a
  busy core (a 100-trial ask took seconds);
- **hyperparameters fitted again only as the trials grow** (from :data:`REFIT_FROM` trials on, once they grew by
  :data:`REFIT_GROWTH`); the GP conditions on every trial at every ask;
- **hyperparameters from at most** :data:`FIT_POINTS` **trials**: beyond that many, the hyperparameters are fitted
  on a random subset (fixed by the seed and the trial count) and the GP then conditions on every trial.  A fit costs
  O(n^3) per step and 75 steps per ask; this bounds it (BENCHMARKS.md "Sampler ask() time", issue 17, measures the
  fit on a subset against the full one).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

import numpy as np

#: beyond this many trials the GP's hyperparameters are fitted on a random subset of this size
FIT_POINTS = 256
#: L-BFGS-B iterations per fit (from the last fit's hyperparameters)
FIT_MAXITER = 75
#: from this many trials on, the hyperparameters are fitted again only once the trials grew by REFIT_GROWTH since the
#: last fit (in between, the GP conditions on every trial with the last fit's hyperparameters): at 100 trials a fit
#: is a quarter of an ask, and 10 more trials barely move lengthscales fitted on 100 (BENCHMARKS.md, ask() time)
REFIT_FROM = 40
REFIT_GROWTH = 0.1
#: the score GP models the residual of a linear trend in log10 of the exact parameter count (slope >= 0), so a config
#: far from every trial is predicted at its size's trend rather than at the trials' mean.  Off: in four real SST-2
#: searches it left as many trials collapsed (13 against 14 of 120) at a lower mean hypervolume; BENCHMARKS "Collapse"
SCORE_TREND = False
#: the names of the GP's free parameters the exact closure handles (botorch's SingleTaskGP defaults)
_NOISE, _MEAN, _LS = "likelihood.noise_covar.raw_noise", "model.mean_module.raw_constant", "model.covar_module.raw_lengthscale"


@contextmanager
def one_thread() -> Iterator[None]:
    """torch and the BLAS libraries (numpy's, scipy's) on one thread inside the block, restored after; a block inside
    another costs nothing."""
    import torch

    n = torch.get_num_threads()
    if n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        try:
            from threadpoolctl import threadpool_limits  # scikit-learn's dependency
        except ImportError:  # pragma: no cover
            yield
        else:
            with threadpool_limits(1):
                yield
    finally:
        torch.set_num_threads(n)


def fit_gp(X: np.ndarray, y: np.ndarray, state: dict[str, Any] | None, seed: int) -> tuple[Any, dict[str, Any]]:
    """A fitted botorch ``SingleTaskGP`` on (X, y), warm-started from ``state`` (the last fit's), and the new state."""
    import torch
    from botorch.models import SingleTaskGP
    from botorch.models.transforms.outcome import Standardize

    with one_thread():
        Xt = torch.as_tensor(X, dtype=torch.double)
        yt = torch.as_tensor(y, dtype=torch.double).unsqueeze(-1)
        if (state is not None and state["d"] == X.shape[1] and "mean" in state and len(X) >= REFIT_FROM
                and state["n"] <= len(X) < state["n"] + max(1, round(REFIT_GROWTH * state["n"]))):
            gp = SingleTaskGP(Xt, yt, outcome_transform=Standardize(m=1))  # the last fit's hyperparameters
            try:
                gp.covar_module.load_state_dict(state["covar"])
                gp.likelihood.load_state_dict(state["lik"])
                gp.mean_module.load_state_dict(state["mean"])
                gp.eval()
                return gp, state
            except (RuntimeError, KeyError):
                pass
        idx = None
        if len(X) > FIT_POINTS:
            idx = np.sort(np.random.default_rng([seed, len(X)]).choice(len(X), FIT_POINTS, replace=False))
        fit_on = SingleTaskGP(Xt[idx] if idx is not None else Xt, yt[idx] if idx is not None else yt,
                              outcome_transform=Standardize(m=1))
        if state is not None and state["d"] == X.shape[1]:
            try:  # warm start from the last fit's hyperparameters
                fit_on.covar_module.load_state_dict(state["covar"])
                fit_on.likelihood.load_state_dict(state["lik"])
            except (RuntimeError, KeyError):
                pass
        _fit(fit_on)
        state = {"d": X.shape[1], "n": len(X), "covar": fit_on.covar_module.state_dict(),
                 "lik": fit_on.likelihood.state_dict(), "mean": fit_on.mean_module.state_dict()}
        gp = fit_on
        if idx is not None:  # the hyperparameters of the subset; the data of every trial
            gp = SingleTaskGP(Xt, yt, outcome_transform=Standardize(m=1))
            gp.covar_module.load_state_dict(state["covar"])
            gp.likelihood.load_state_dict(state["lik"])
            gp.mean_module.load_state_dict(fit_on.mean_module.state_dict())
        gp.eval()
    return gp, state


def _fit(gp: Any) -> None:
    from botorch.fit import fit_gpytorch_mll
    from gpytorch.mlls import ExactMarginalLogLikelihood

    mll = ExactMarginalLogLikelihood(gp.likelihood, gp)
    try:
        fit_gpytorch_mll(mll, closure=_exact_closure(mll), optimizer_kwargs={"options": {"maxiter": FIT_MAXITER}})
    except Exception:  # a failed fit keeps the (prior or warm-started) hyperparameters
        pass


def _exact_closure(mll: Any) -> Callable[[], tuple[Any, list[Any]]] | None:
    """botorch's loss closure for ``mll`` (negative MAP marginal log likelihood over the number of points, and the
    gradients of the free parameters in botorch's order), computed in closed form; None (botorch's own closure) for
    any model that is not the default RBF/ARD ``SingleTaskGP`` with untransformed bounded parameters."""
    import torch
    from botorch.optim.utils import get_parameters_and_bounds
    from gpytorch.kernels import RBFKernel
    from gpytorch.priors import LogNormalPrior

    gp = mll.model
    params, _ = get_parameters_and_bounds(mll)
    params = {k: p for k, p in params.items() if p.requires_grad}
    ker, noise_covar = gp.covar_module, gp.likelihood.noise_covar
    for _, module, prior, _, _ in gp.named_priors():  # what gpytorch's MLL adds: each prior of the model once
        if type(prior) is not LogNormalPrior or not (
                (module is ker and prior is ker.lengthscale_prior) or (module is noise_covar and prior is noise_covar.noise_prior)):
            return None
    if (type(ker) is not RBFKernel or set(params) != {_NOISE, _MEAN, _LS} or getattr(gp, "input_transform", None)
            or ker.raw_lengthscale_constraint.enforced or noise_covar.raw_noise_constraint.enforced
            or len(list(gp.named_priors())) != 2):
        return None
    X = gp.train_inputs[0].detach()
    y = gp.train_targets.detach()
    n = len(y)
    sq = X * X
    eye = torch.eye(n, dtype=X.dtype)
    ls_mu, ls_sd = float(ker.lengthscale_prior.loc), float(ker.lengthscale_prior.scale)
    nz_mu, nz_sd = float(noise_covar.noise_prior.loc), float(noise_covar.noise_prior.scale)

    def lognormal(v: Any, mu: float, sd: float) -> tuple[Any, Any]:
        lv = torch.log(v)
        logp = -lv - math.log(sd * math.sqrt(2 * math.pi)) - (lv - mu) ** 2 / (2 * sd * sd)
        return logp.sum(), -1.0 / v - (lv - mu) / (sd * sd * v)

    def closure(**_: Any) -> tuple[Any, list[Any]]:
        with torch.no_grad():
            ls = params[_LS].detach().reshape(-1)
            s2 = params[_NOISE].detach().reshape(-1)
            c = params[_MEAN].detach().reshape(-1)
            Z = X / ls
            zz = (Z * Z).sum(1)
            Kf = torch.exp(-0.5 * (zz[:, None] + zz[None, :] - 2.0 * Z @ Z.T).clamp_min(0.0))
            L = _cholesky(Kf + s2 * eye)
            r = (y - c).unsqueeze(-1)
            Kinv = torch.cholesky_inverse(L)
            alpha = (Kinv @ r).squeeze(-1)
            loglik = (-0.5 * (r.squeeze(-1) @ alpha) - torch.log(torch.diagonal(L)).sum()
                      - 0.5 * n * math.log(2 * math.pi))
            W = torch.outer(alpha, alpha) - Kinv
            M = W * Kf
            g_ls = ((M.sum(1) @ sq) - ((M @ X) * X).sum(0)) / ls ** 3  # d loglik / d lengthscale
            g_s2 = 0.5 * torch.trace(W)
            p_ls, dp_ls = lognormal(ls, ls_mu, ls_sd)
            p_s2, dp_s2 = lognormal(s2, nz_mu, nz_sd)
            loss = -(loglik + p_ls + p_s2) / n
            grads = {_LS: -(g_ls + dp_ls) / n, _NOISE: -(g_s2 + dp_s2) / n, _MEAN: -alpha.sum() / n}
            out = []
            for name, p in params.items():
                g = grads[name].reshape(p.shape).to(p.dtype)
                p.grad = g
                out.append(g)
        return loss, out

    return closure


def _cholesky(K: Any) -> Any:
    """Lower Cholesky factor, with gpytorch's escalating jitter (1e-8, 1e-7, 1e-6 for doubles) if K is not PD."""
    import torch
    from linear_operator.utils.errors import NotPSDError

    L, info = torch.linalg.cholesky_ex(K)
    for jitter in (1e-8, 1e-7, 1e-6):
        if not int(info):
            return L
        L, info = torch.linalg.cholesky_ex(K + jitter * torch.eye(len(K), dtype=K.dtype))
    if int(info):
        raise NotPSDError("the GP's covariance matrix is not positive definite")
    return L


def posterior(gp: Any, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The GP's mean and standard deviation of the score at the rows of ``X``: botorch's posterior (latent, no
    observation noise, un-standardised), computed in numpy from one Cholesky factor kept on the model (an ask predicts
    at the pool, the pending trials and each mutation step: six calls through gpytorch took a third of an ask); equal
    to ``gp.posterior`` to 1e-9 (tests/test_samplers.py).  A model other than :func:`fit_gp`'s goes through botorch."""
    pre = _predictor(gp)
    if pre is not None:
        Ztr, alpha, L, c, y_mean, y_std, ls = pre
        Z = np.asarray(X, dtype=float) / ls
        d2 = (Z * Z).sum(1)[:, None] + (Ztr * Ztr).sum(1)[None, :] - 2.0 * (Z @ Ztr.T)
        Ks = np.exp(-0.5 * np.maximum(d2, 0.0))
        mu = c + Ks @ alpha
        from scipy.linalg import solve_triangular

        v = solve_triangular(L, Ks.T, lower=True, check_finite=False)
        var = (1.0 - (v * v).sum(0)) * y_std ** 2
        var = np.where(var < 1e-10, 1e-10, var)  # gpytorch's least variance for doubles
        return mu * y_std + y_mean, np.sqrt(np.maximum(var, 1e-12))
    return _botorch_posterior(gp, X)


def _predictor(gp: Any) -> tuple[Any, ...] | None:
    """(scaled training inputs, (K + noise)^-1 (y - c), the Cholesky factor, c, outcome mean and sd, lengthscales) of
    a fitted default ``SingleTaskGP`` (RBF/ARD, constant mean, Gaussian noise, ``Standardize``, no input transform),
    computed once per model; None for any other model."""
    cached = getattr(gp, "_autopeft_predictor", False)
    if cached is not False:
        return cached
    import torch
    from botorch.models.transforms.outcome import Standardize
    from gpytorch.kernels import RBFKernel
    from gpytorch.means import ConstantMean

    pre = None
    tf = getattr(gp, "outcome_transform", None)
    if (type(gp.covar_module) is RBFKernel and type(gp.mean_module) is ConstantMean and type(tf) is Standardize
            and getattr(gp, "input_transform", None) is None and len(gp.train_inputs) == 1
            and gp.train_targets.dim() == 1):
        with torch.no_grad():
            ls = gp.covar_module.lengthscale.detach().reshape(-1).numpy().astype(float)
            s2 = float(gp.likelihood.noise.detach().reshape(-1)[0])
            c = float(gp.mean_module.constant.detach().reshape(-1)[0])
            Ztr = gp.train_inputs[0].detach().numpy().astype(float) / ls
            y = gp.train_targets.detach().numpy().astype(float)
            y_mean = float(tf.means.detach().reshape(-1)[0])
            y_std = float(tf.stdvs.detach().reshape(-1)[0])
        zz = (Ztr * Ztr).sum(1)
        K = np.exp(-0.5 * np.maximum(zz[:, None] + zz[None, :] - 2.0 * (Ztr @ Ztr.T), 0.0))
        L = _cholesky(torch.as_tensor(K + s2 * np.eye(len(K)))).numpy()
        from scipy.linalg import cho_solve

        alpha = cho_solve((L, True), y - c, check_finite=False)
        pre = (Ztr, alpha, L, c, y_mean, y_std, ls)
    try:
        gp._autopeft_predictor = pre
    except (AttributeError, TypeError):  # pragma: no cover - a model refusing attributes: recomputed each call
        pass
    return pre


def _botorch_posterior(gp: Any, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import torch

    with one_thread(), torch.no_grad():
        post = gp.posterior(torch.as_tensor(X, dtype=torch.double))
        mu = post.mean.squeeze(-1).numpy()
        sd = post.variance.clamp_min(1e-12).sqrt().squeeze(-1).numpy()
    return mu, sd


def cells(ref: np.ndarray, Y: np.ndarray, floor: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The box decomposition (lower, upper corners) of the region ``Y`` does not dominate above ``ref`` (its score
    coordinate raised to ``floor`` if given)."""
    import torch
    from botorch.utils.multi_objective.box_decompositions.non_dominated import FastNondominatedPartitioning

    refp = torch.as_tensor(ref, dtype=torch.double).clone()
    if floor is not None:
        refp[0] = max(float(refp[0]), floor)
    Yt = torch.as_tensor(Y, dtype=torch.double)
    Yt = Yt[(Yt > refp).all(-1)]
    if Yt.shape[1] == 1:
        best = float(Yt.max()) if len(Yt) else float(refp[0])
        return np.array([[best]]), np.array([[np.inf]])
    with one_thread():
        part = FastNondominatedPartitioning(ref_point=refp, Y=Yt)
        b = part.get_hypercell_bounds().numpy()
    return b[0], b[1]


def log_params_trend(params: Sequence[float], y: np.ndarray) -> Callable[[Sequence[float]], np.ndarray]:
    """The least-squares line of the scores ``y`` in log10 of the parameter counts ``params`` (the mean when the
    scores fall with size or every count is the same; zero with fewer than 3 points), as a function of counts."""
    lp = np.log10(np.maximum(np.asarray(params, dtype=float), 1.0))
    if len(lp) < 3:
        return lambda p: np.zeros(len(p))
    slope, icpt = np.polyfit(lp, y, 1) if np.ptp(lp) > 0 else (0.0, float(np.mean(y)))
    if slope < 0:
        slope, icpt = 0.0, float(np.mean(y))
    return lambda p: icpt + slope * np.log10(np.maximum(np.asarray(p, dtype=float), 1.0))
