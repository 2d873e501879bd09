"""End-to-end training runs on a tiny fixture: outputs, determinism, resume, failures, soft targets; the
training step: no host reads inside an epoch, compiled without graph breaks and equal to the eager step."""

import json
import traceback
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from rsckd.architectures import ARCHITECTURES
from rsckd.cli import main as cli_main
from rsckd.config import load_params
from rsckd.errors import UserError
from rsckd.evaluation.icbhi_score import icbhi_scores
from rsckd.models import build_model, build_tokenizer, tokenize
from rsckd.training import loop, resume
from rsckd.training.artifacts import CURVES, HISTORY_COLUMNS, load_run
from rsckd.training.run import train_run
from rsckd.training.specaugment import draw_masks
from rsckd.training.targets import Targets
from run_fixtures import cycle_table, learnable_features

REPO = Path(__file__).resolve().parents[1]
N_FIT, N_VAL, N_TEST = 72, 24, 48
SHAPES = {"clap": (24, 16), "fbank": (32, 16)}  # (T, F) of the tiny models' feature kinds
T, F = SHAPES["clap"]
PROMPTS = [
    "This sound was recorded from the trachea of an adult male patient, using a Meditron stethoscope.",
    "This sound was recorded from the left anterior chest of a female pediatric patient, using an AKGC417L "
    "microphone.",
    "This sound was recorded from the right posterior chest of an adult female patient, using a LittC2SE "
    "stethoscope.",
]


def _table() -> pd.DataFrame:
    return cycle_table(N_FIT, N_VAL, N_TEST, PROMPTS, per_patient=12)


def _features(labels: np.ndarray, rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    return learnable_features(labels, rng, shape)


@pytest.fixture(autouse=True)
def _restore_torch_globals():
    """A run sets torch's thread count and deterministic mode for the process; restore them after."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)


@pytest.fixture
def ws(tmp_path, monkeypatch):
    monkeypatch.setenv("RSCKD_RESUME_DIR", str(tmp_path / "resume"))
    rng = np.random.default_rng(0)
    table = _table()
    cycles = tmp_path / "cycles.csv"
    table.to_csv(cycles, index=False)
    features = {}
    for kind in ("clap", "fbank"):
        d = tmp_path / "features" / kind
        d.mkdir(parents=True)
        np.save(d / "features.npy", _features(table["label"].to_numpy(), rng, SHAPES[kind]))
        (d / "meta.json").write_text(json.dumps({"kind": kind, "shape": [len(table), *SHAPES[kind]]}))
        features[kind] = d
    params = load_params(REPO / "params.yaml")
    # one thread: fast on a busy shared machine; native kernels: this process has already run torch kernels
    params.runtime.device, params.runtime.threads, params.runtime.cpu_kernels = "cpu", 1, "native"
    for _, cfg in params.train.items():
        cfg.epochs, cfg.batch_size = 3, 16
    return SimpleNamespace(
        root=tmp_path, cycles=cycles, features=features, params=params, n_train=N_FIT + N_VAL
    )


def _run(ws, name, arch="bts", **kw):
    out, metrics = ws.root / name, ws.root / f"{name}.json"
    kind = ARCHITECTURES[arch].feature_kind
    summary = train_run(
        arch, 1, out, metrics, ws.params, cycles=ws.cycles, features_dir=ws.features[kind], **kw
    )
    return out, metrics, summary


def _bytes(out: Path, metrics: Path) -> dict[str, bytes]:
    files = {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    return {**files, "metrics": metrics.read_bytes()}


def _resume_files(ws) -> list[Path]:
    return sorted((ws.root / "resume").rglob("*.pt"))


def test_run_writes_the_contract_outputs(ws):
    out, metrics, summary = _run(ws, "run", curves=ws.root / "curves")
    for name in ("model.safetensors", "logits_train.npy", "logits_test.npy", "history.csv", "config.json"):
        assert (out / name).is_file(), name
    assert (out / "tokenizer").is_dir()
    train_logits, test_logits = np.load(out / "logits_train.npy"), np.load(out / "logits_test.npy")
    assert train_logits.shape == (ws.n_train, 4) and test_logits.shape == (N_TEST, 4)
    assert train_logits.dtype == test_logits.dtype == np.float32
    history = pd.read_csv(out / "history.csv")
    assert tuple(history.columns) == HISTORY_COLUMNS and history["epoch"].tolist() == [1, 2, 3]
    assert history["val_score"].notna().all()
    data = json.loads(metrics.read_text())
    assert data["arch"] == "bts" and data["target"] == "hard" and data["k"] is None and data["seed"] == 1
    assert data["selected"] == "literature" and data["n_params"] > 0 and data["target_entropy"] == 0.0
    assert set(data["literature"]) == {"epoch", "sp", "se", "score", "loss", "qualified"}
    assert data["last"]["epoch"] == 3 and set(data["val"]) == {
        "epoch",
        "sp",
        "se",
        "score",
        "loss",
        "val_score",
    }
    # the per-epoch curves, as dvclive plot files: one row per epoch, the history's values, nothing else
    assert not (ws.root / "curves" / "metrics.json").exists()
    for name, column in CURVES.items():
        curve = pd.read_csv(ws.root / "curves" / "plots" / "metrics" / f"{name}.tsv", sep="\t")
        assert curve["step"].tolist() == [1, 2, 3], name
        assert np.allclose(curve.iloc[:, 1], history[column], rtol=1e-5), name
    # the written test logits are those of the selected epoch
    labels = pd.read_csv(ws.cycles)["label"].to_numpy()[-N_TEST:]
    scores = icbhi_scores(labels, test_logits.argmax(axis=1))
    assert scores["score"] == pytest.approx(data["literature"]["score"], abs=1e-6)
    row = history[history["epoch"] == data["literature"]["epoch"]].iloc[0]
    assert row["test_score"] == pytest.approx(data["literature"]["score"], abs=1e-5)
    config = json.loads((out / "config.json").read_text())
    assert (
        config["feature_shape"] == [T, F] and config["feature_kind"] == "clap" and config["target"] == "hard"
    )
    assert _resume_files(ws) == []


def test_load_run_rebuilds_the_selected_model(ws):
    out, _, _ = _run(ws, "run")
    model, config, tokenizer = load_run(out)
    assert not model.training and config["arch"] == "bts" and tokenizer is not None
    from rsckd.models import tokenize

    x = torch.from_numpy(np.load(ws.features["clap"] / "features.npy")[-N_TEST:])
    ids, mask = tokenize(
        tokenizer, [PROMPTS[i % 3] for i in range(N_FIT + N_VAL, N_FIT + N_VAL + N_TEST)], 64
    )
    with torch.no_grad():
        logits = model(x, ids, mask)
    np.testing.assert_allclose(logits.numpy(), np.load(out / "logits_test.npy"), atol=1e-4)


def test_same_run_twice_is_byte_identical(ws):
    a = _bytes(*_run(ws, "a")[:2])
    b = _bytes(*_run(ws, "b")[:2])
    assert a.keys() == b.keys() and a == b


class Interrupt(Exception):
    pass


def _interrupt_after(epoch):
    def hook(e):
        if e == epoch:
            raise Interrupt

    return hook


def test_resumed_run_is_byte_identical(ws, capsys):
    reference = _bytes(*_run(ws, "a")[:2])
    with pytest.raises(Interrupt):
        _run(ws, "b", epoch_hook=_interrupt_after(2))
    assert not (ws.root / "b").exists() and not (ws.root / "b.json").exists()
    assert len(_resume_files(ws)) == 1
    capsys.readouterr()
    resumed = _bytes(*_run(ws, "b")[:2])
    assert "resuming after epoch 2" in capsys.readouterr().err
    assert resumed == reference
    assert _resume_files(ws) == []


@pytest.mark.parametrize("change", ["param", "code"])
def test_changed_param_or_code_does_not_resume_a_stale_run(ws, capsys, monkeypatch, change):
    with pytest.raises(Interrupt):
        _run(ws, "b", epoch_hook=_interrupt_after(1))
    if change == "param":
        ws.params.train["bts"].lr = 2e-3
    else:
        monkeypatch.setattr(resume, "source_digest", lambda: "an edited package")
    capsys.readouterr()
    _run(ws, "b")
    assert "resuming" not in capsys.readouterr().err
    assert len(_resume_files(ws)) == 1  # the stale run's checkpoint stays, under its own key


@pytest.mark.parametrize("cause", ["inf_feature", "huge_lr"])
def test_non_finite_loss_stops_and_writes_nothing(ws, cause):
    if cause == "inf_feature":
        path = ws.features["clap"] / "features.npy"
        x = np.load(path)
        x[:N_FIT] = np.inf
        np.save(path, x)
    else:
        ws.params.train["bts"].lr = 1e30
    with pytest.raises(UserError, match=r"NaN or infinite at epoch \d+, step \d+"):
        _run(ws, "run")
    assert not (ws.root / "run").exists() and not (ws.root / "run.json").exists()


def _write_soft(ws, name, k, rows=None):
    soft_dir = ws.root / "soft_labels"
    soft_dir.mkdir(exist_ok=True)
    rng = np.random.default_rng(k)
    np.save(soft_dir / name, rng.normal(size=(k, rows or ws.n_train, 4)).astype(np.float32))
    return soft_dir / name


def test_soft_targets_and_ablation(ws):
    for _, arch_cfg in ws.params.train.items():
        arch_cfg.epochs = 1
    soft = _write_soft(ws, "k3.npy", 3)
    _, metrics, summary = _run(ws, "random", target="random", soft=str(soft))
    assert summary["target"] == "random" and summary["k"] == 3 and 0 < summary["target_entropy"] < np.log(4)
    assert json.loads(metrics.read_text())["k"] == 3
    single = _write_soft(ws, "single_teacher.npy", 1)
    _, _, summary = _run(ws, "single", ablation="single_teacher", soft=str(single))
    assert (summary["target"], summary["k"], summary["ablation"]) == ("mean", 1, "single_teacher")
    no_teacher = _write_soft(ws, "noise_var.npy", 0)
    _, _, summary = _run(ws, "noise", ablation="noise_var", soft=str(no_teacher))
    assert (summary["target"], summary["k"], summary["target_entropy"]) == ("noise_var", None, None)
    five = _write_soft(ws, "k5.npy", 5)
    for variant in ("noise_teacher_var", "raw_logits"):
        _, _, summary = _run(ws, variant, ablation=variant, soft=str(five))
        assert (summary["target"], summary["k"]) == (variant, 5)
    with pytest.raises(UserError, match="reads no teacher logits, but the file has some"):
        _run(ws, "noise-with-teachers", ablation="noise_var", soft=str(five))
    with pytest.raises(UserError, match="holds no teacher logits"):
        _run(ws, "curated", ablation="curated", soft=str(no_teacher))
    with pytest.raises(UserError, match="curated.npy: soft-label file not found"):
        _run(ws, "curated", ablation="curated", soft=str(soft.parent / "curated.npy"))


def test_class_weights_weight_soft_label_runs_as_they_weight_hard_label_ones(ws):
    """Soft labels that are the one-hot labels themselves train as the hard labels do, class-weighted or not:
    the weighting does not depend on the target kind."""
    cfg = ws.params.train["cnn6"]
    cfg.epochs, cfg.specaugment = 1, None
    table = pd.read_csv(ws.cycles)
    table.loc[table["label"] == 3, "label"] = 0  # unequal classes, so the weights matter
    ws.cycles = ws.root / "unequal.csv"
    table.to_csv(ws.cycles, index=False)
    labels = table.loc[table["split"] == "train", "label"].to_numpy()
    one_hot = ws.root / "one_hot.npy"
    np.save(one_hot, 100.0 * np.eye(4, dtype=np.float32)[labels][None])  # softmax: the one-hot rows
    losses = {}
    for weighted in (True, False):
        cfg.class_weighted = weighted
        for target in ("hard", "mean"):
            soft = None if target == "hard" else str(one_hot)
            out, _, _ = _run(ws, f"{target}-{weighted}", arch="cnn6", target=target, soft=soft)
            losses[target, weighted] = pd.read_csv(out / "history.csv")["train_loss"].iloc[0]
    for weighted in (True, False):
        assert losses["mean", weighted] == pytest.approx(losses["hard", weighted], rel=1e-5)
    assert losses["hard", True] != pytest.approx(losses["hard", False], rel=1e-3)


def test_soft_file_row_mismatch_is_a_user_error(ws):
    soft = _write_soft(ws, "k2.npy", 2, rows=ws.n_train - 1)
    with pytest.raises(UserError, match=rf"k2\.npy: has {ws.n_train - 1} rows .* {ws.n_train} train rows"):
        _run(ws, "run", target="mean", soft=str(soft))
    assert not (ws.root / "run").exists()


def test_fbank_arch_with_specaugment_and_class_weights(ws):
    cfg = ws.params.train["cnn6"]
    cfg.epochs, cfg.select = 2, "val"
    assert cfg.class_weighted and cfg.specaugment
    out, _, summary = _run(ws, "cnn6", arch="cnn6")
    assert summary["selected"] == "val" and summary["val"]["epoch"] in (1, 2)
    assert not (out / "tokenizer").exists()


def test_epochs_flag_replaces_the_protocols_epochs_for_this_run_only(ws):
    out, _, summary = _run(ws, "short", arch="cnn6", epochs=2)
    assert pd.read_csv(out / "history.csv")["epoch"].tolist() == [1, 2] and summary["last"]["epoch"] == 2
    assert json.loads((out / "config.json").read_text())["train"]["epochs"] == 2  # what the run trained under
    assert ws.params.train["cnn6"].epochs == 3


def test_cli_flag_errors(ws, capsys):
    base = [
        "train",
        "--arch",
        "bts",
        "--seed",
        "1",
        "--out",
        str(ws.root / "o"),
        "--metrics",
        str(ws.root / "m.json"),
    ]
    base += ["--params", str(REPO / "params.yaml"), "--cycles", str(ws.cycles)]
    assert cli_main([*base, "--ablation", "curated", "--target", "mean"]) == 2
    assert "--ablation chooses" in capsys.readouterr().err
    assert cli_main([*base, "--target", "mean"]) == 2
    assert "needs --soft" in capsys.readouterr().err
    assert cli_main([*base, "--epochs", "0"]) == 2
    assert "--epochs: expected an integer >= 1, got 0" in capsys.readouterr().err
    base[base.index("--seed") + 1] = "-1"
    assert cli_main(base) == 2
    assert "--seed: expected an integer >= 0 and <= 4294967295, got -1" in capsys.readouterr().err


def test_checkpoints_are_spaced_by_wall_time_and_keep_their_key(ws, capsys):
    ws.params.train["bts"].select = "last"  # the selected epoch is always the checkpoint's own
    reference = _bytes(*_run(ws, "a")[:2])
    ws.params.resume.checkpoint_minutes = 30.0
    with pytest.raises(Interrupt):
        _run(ws, "b", epoch_hook=_interrupt_after(2))
    assert _resume_files(ws) == []  # no 30 minutes passed: nothing saved
    ws.params.resume.checkpoint_minutes = 0.0
    with pytest.raises(Interrupt):
        _run(ws, "b", epoch_hook=_interrupt_after(2))
    [checkpoint] = _resume_files(ws)
    best = torch.load(checkpoint, weights_only=True)["best"]
    assert best["epoch"] == 2 and best["state"] is None  # its weights are the model's: not saved twice
    ws.params.resume.checkpoint_minutes = 30.0  # when to save is not part of the run's identity
    capsys.readouterr()
    assert _bytes(*_run(ws, "b")[:2]) == reference
    assert "resuming after epoch 2" in capsys.readouterr().err


HOST_READS = {  # ops that make the host wait for a value computed on the device
    torch.ops.aten._local_scalar_dense,  # .item(), bool(), int(), float() of a tensor
    torch.ops.aten.is_nonzero,
    torch.ops.aten.equal,
    torch.ops.aten.nonzero,  # output shapes that depend on values
    torch.ops.aten.masked_select,
    torch.ops.aten._unique2,
    torch.ops.aten.unique_consecutive,
    torch.ops.aten.unique_dim,
}


class HostReads(TorchDispatchMode):
    """Records, with a stack, every op that would make the host wait for the device (boolean-mask
    indexing included); works on CPU, where nothing actually waits."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        bool_index = func is torch.ops.aten.index.Tensor and any(
            i is not None and i.dtype == torch.bool for i in args[1]
        )
        if func.overloadpacket in HOST_READS or bool_index:
            self.reads.append(f"{func}\n" + "".join(traceback.format_stack(limit=12)[:-1]))
        return func(*args, **(kwargs or {}))


def _epoch_inputs(arch, target="hard", compile_mode="off"):
    """What ``loop.train`` builds for one epoch, on a tiny model, class-weighted: (step, cycles, rows,
    targets, row weights, cfg)."""
    kind = ARCHITECTURES[arch].feature_kind
    params = load_params(REPO / "params.yaml")
    model_cfg, cfg = params.models[arch], params.train[arch]
    table = _table()
    labels = table["label"].to_numpy().astype(np.int64)[:N_FIT]
    tokenizer = tokens = prompt_index = None
    if arch == "bts":
        prompts, prompt_index = np.unique(table["prompt"].to_numpy().astype(str), return_inverse=True)
        tokenizer = build_tokenizer(model_cfg, prompts.tolist())
        tokens = tokenize(tokenizer, prompts.tolist(), model_cfg.max_text_length)
        prompt_index = prompt_index[:N_FIT]
    torch.manual_seed(0)
    model = build_model(arch, model_cfg, SHAPES[kind], tokenizer=tokenizer)
    soft = (
        np.random.default_rng(1).normal(size=(3, N_FIT, 4)).astype(np.float32) if target != "hard" else None
    )
    fit = loop.CycleSet(
        features=_features(labels, np.random.default_rng(0), SHAPES[kind]),
        labels=labels,
        prompt_index=prompt_index,
        targets=Targets(target, labels, soft),
    )
    device = torch.device("cpu")
    optimizer, lr = loop.make_optimizer(model, cfg.weight_decay, device)
    lr.fill_(cfg.lr)
    weight, row_weights = loop.loss_weights(True, fit, device)
    step = loop.TrainStep(model, optimizer, weight, compile_mode)
    cycles = loop.DeviceCycles(fit, tokens, device)
    targets = torch.from_numpy(fit.targets.for_epoch(1))
    return step, cycles, torch.arange(N_FIT), targets, row_weights, cfg


def _epoch(step, cycles, rows, targets, row_weights, cfg):
    """One epoch's steps as ``loop.train`` takes them: shuffled, SpecAugment masks drawn for the epoch."""
    bs = cfg.batch_size
    order = rows[torch.randperm(len(rows), generator=loop.stream_generator(1, 1, loop.SHUFFLE))]
    masks = _masks(cfg, len(order), tuple(cycles.x.shape[1:]))
    steps = len(order) // bs
    return loop.train_steps(step, cycles, order, targets, masks, bs, steps, row_weights=row_weights)


@pytest.mark.parametrize(("arch", "target"), [("bts", "hard"), ("cnn6", "mean")])
def test_an_epoch_never_waits_for_the_device(arch, target, one_thread):
    """Training steps (SpecAugment, class weights or soft targets, fused Adam) and batched evaluation ask
    the device for no value: on a GPU the host runs ahead and the step can be a CUDA graph."""
    step, cycles, rows, targets, row_weights, cfg = _epoch_inputs(arch, target)
    assert (cfg.specaugment is not None) == (arch == "cnn6") and (row_weights is None) == (target == "hard")
    with HostReads() as watch:
        _epoch(step, cycles, rows, targets, row_weights, cfg)
        loop.predict(step.model, step.model, cycles, 64)
    assert watch.reads == [], watch.reads[0]


def test_evaluation_encodes_each_distinct_prompt_once_with_the_per_row_logits(one_thread):
    """``predict`` runs the text tower once, over the distinct prompts of the token table, not once per row,
    and every row gets the logits of the per-row forward pass (a training step's, ``rsckd predict``'s)."""
    step, cycles, *_ = _epoch_inputs("bts")
    rows_seen = []
    step.model.clap.text_model.register_forward_hook(
        lambda module, args, kwargs, out: rows_seen.append(len(kwargs["input_ids"])), with_kwargs=True
    )
    logits = loop.predict(step.model, step.model, cycles, 8)
    assert rows_seen == [len(cycles.tokens[0])] and rows_seen[0] < cycles.n
    with torch.no_grad():
        per_row = step.model(*cycles.batch(slice(None)))
    torch.testing.assert_close(logits, per_row)


def test_host_read_watch_sees_the_2d_text_mask(one_thread, monkeypatch):
    """The watch is not blind: the text tower's own 2-D mask path asks ``mask.all()`` on every forward."""
    from rsckd.models import bts

    monkeypatch.setattr(bts, "additive_attention_mask", lambda mask, dtype: mask)
    step, cycles, rows, targets, row_weights, cfg = _epoch_inputs("bts")
    with HostReads() as watch:
        _epoch(step, cycles, rows, targets, row_weights, cfg)
    assert watch.reads and all("masking_utils" in read for read in watch.reads)


@pytest.fixture
def fresh_dynamo():
    """Compiled code caches live in the process: start and end each compile test without them."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _masks(cfg, n, shape):
    """SpecAugment masks of ``n`` samples if the block has SpecAugment, else none."""
    if cfg.specaugment is None:
        return None, None
    return draw_masks(n, shape, cfg.specaugment, torch.Generator().manual_seed(0))


@pytest.mark.parametrize("arch", ["bts", "audio_clap", "ast"])
def test_step_and_evaluation_compile_without_graph_breaks(arch, one_thread, fresh_dynamo):
    step, cycles, rows, targets, _, cfg = _epoch_inputs(arch)
    idx = rows[: cfg.batch_size]
    x, ids, mask = cycles.batch(idx)
    train = torch._dynamo.explain(step.eager)(x, ids, mask, targets[idx], *_masks(cfg, len(idx), x.shape[1:]))
    step.model.eval()
    with torch.no_grad():
        x, prompts = next(cycles.embedded_batches(step.model, idx[None]))
        evaluate = torch._dynamo.explain(loop.forward)(step.model, x, prompts=prompts)
    for explained in (train, evaluate):
        assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons


COMPILED_RTOL = 1e-5  # measured: below 3e-7 (float32 rounding)


@pytest.mark.slow
def test_compiled_step_gives_the_eager_losses(one_thread, fresh_dynamo):
    """Inductor's Audio-CLAP training step against the eager one over 3 steps (inductor draws its random
    numbers as eager does, so the dropout masks match). BTS's step is this HTSAT step with a RoBERTa text
    tower beside it (that it compiles whole is checked above; compiling it here would add 2 minutes of CPU
    to every CI run); AST, which has no dropout, is compared over a whole run below."""
    losses = {}
    for mode in ("off", "default"):
        step, cycles, rows, targets, _, cfg = _epoch_inputs("audio_clap", compile_mode=mode)
        masks = _masks(cfg, 12, tuple(cycles.x.shape[1:]))
        losses[mode] = []
        torch.manual_seed(3)
        with torch._inductor.config.patch(fallback_random=True):
            for b in (slice(0, 4), slice(4, 8), slice(8, 12)):
                time_mask, freq_mask = (m if m is None else m[b] for m in masks)
                losses[mode].append(step(4, *cycles.batch(rows[b]), targets[b], time_mask, freq_mask))
    torch.testing.assert_close(
        torch.stack(losses["default"]), torch.stack(losses["off"]), rtol=COMPILED_RTOL, atol=0
    )


@pytest.mark.slow
def test_compiled_run_matches_the_eager_run(ws, fresh_dynamo):
    """``runtime.compile: default`` through a whole AST run (SpecAugment masks inside the compiled step,
    class weights, padded evaluation batches; AST has no dropout) gives the eager run's history and logits."""
    ws.params.train["ast"].epochs = 2
    eager, _, _ = _run(ws, "eager", arch="ast")
    ws.params.runtime.compile = "default"
    compiled, _, _ = _run(ws, "compiled", arch="ast")
    histories = [pd.read_csv(out / "history.csv") for out in (eager, compiled)]
    for column in ("train_loss", "test_loss"):
        np.testing.assert_allclose(histories[1][column], histories[0][column], rtol=COMPILED_RTOL)
    for name in ("logits_train.npy", "logits_test.npy"):
        np.testing.assert_allclose(
            np.load(compiled / name), np.load(eager / name), rtol=COMPILED_RTOL, atol=1e-5
        )
