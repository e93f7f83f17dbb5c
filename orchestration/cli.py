"""The ``fedaegis`` command line: run simulations and read stored runs."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from click.core import ParameterSource
from rich.table import Table

from ..shared.run.config import ConfigError, RunConfig, default_db_url, fedaegis_home
from ..shared.run.preflight import Names, PreflightError
from ..shared.run.redact import mask_secrets
from ..shared.results import query
from ..shared.results.base import eps_display
from ..shared.store import RunNotFoundError, RunStore
from .results_view import defence_cells, print_families
from .options import JSON_SCHEMA, DbOption
from .terminal import console, out
from .terminal import fail as _fail
from .terminal import open_store as _open_store
from .terminal import parse_overrides as _parse_overrides
from .terminal import secrets as _secrets
from .terminal import setup_logging as _setup_logging
from .terminal import site_log_path

app = typer.Typer(
    help="Federated robustness evaluation of medical imaging models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals hold database URLs with their passwords
)
_debug = False


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            out.print(f"fedaegis {version('fedaegis')}", highlight=False)
        except PackageNotFoundError:
            out.print("fedaegis (not installed)")
        raise typer.Exit()


@app.callback()
def _global(
    debug: Annotated[bool, typer.Option("--debug", help="On an unexpected error, print its traceback (passwords masked).")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    """Federated robustness evaluation of medical imaging models."""
    global _debug
    _debug = debug


@app.command()
def simulate(
    ctx: typer.Context,
    sites: Annotated[int | None, typer.Option(help="Number of simulated hospitals (default 5; with --resume: the run's own).", show_default=False)] = None,
    rounds: Annotated[int, typer.Option(help="Federated rounds.")] = 3,
    task: Annotated[str, typer.Option(help="classification, or segmentation (a Decathlon-style imagesTr/labelsTr folder as --dataset).")] = "classification",
    dataset: Annotated[str, typer.Option(help="A MedMNIST .npz, an image/DICOM folder, or embedded:pneumoniamnist.")] = "embedded:pneumoniamnist",
    model: Annotated[str, typer.Option(help="cnn, densenet121, resnet10, resnet18, resnet34; your own package.module:factory; monai:<Name> (a class of monai.networks.nets, arguments in -c model-args).")] = "cnn",
    norm: Annotated[str, typer.Option(help="group (default; DP-SGD ready) or batch.")] = "group",
    partitioning: Annotated[str, typer.Option(help="iid, dirichlet (label skew) or quantity (size skew).")] = "iid",
    alpha: Annotated[float, typer.Option(help="Dirichlet concentration for non-IID partitioning.")] = 0.5,
    seed: Annotated[int, typer.Option(help="Seed for partitioning, initialisation and training.")] = 0,
    local_epochs: Annotated[int, typer.Option(help="Local epochs per round at each site.")] = 5,
    attacks: Annotated[str, typer.Option(help="Attack suite evaluated at every site (in the rounds of -c attack-rounds: the final one by default), e.g. fgsm,pgd,autoattack; '' for none.")] = "fgsm,pgd",
    epsilons: Annotated[str, typer.Option(help="Budgets for the attack suite (fractions allowed).")] = "1/255,2/255,4/255,8/255",
    attack_samples: Annotated[int, typer.Option(help="Test samples attacked per site (0: all).")] = 256,
    name: Annotated[str, typer.Option(help="A name stored with the run.")] = "",
    db_url: DbOption = None,
    ray_address: Annotated[str | None, typer.Option(help="Join an existing Ray cluster (e.g. ray://host:10001 or auto).")] = None,
    num_cpus: Annotated[int | None, typer.Option(help="CPUs of the local Ray instance.")] = None,
    client_cpus: Annotated[float, typer.Option(help="Whole CPUs reserved per Ray actor running sites (at least; the pool never exceeds the sites). Flower's Simulation Runtime takes no fractions: they are refused.")] = 1.0,
    client_memory: Annotated[int, typer.Option(help="Memory (MB) per Ray actor; the pool shrinks to fit it (0: none). Flower's Simulation Runtime cannot make Ray reserve it.")] = 0,
    client_gpus: Annotated[float, typer.Option(help="GPU share per simulated site's Ray actor (e.g. 0.25: four sites share a GPU; 0: CPU only).")] = 0.0,
    resume: Annotated[str | None, typer.Option(help="Resume an interrupted run (id or uuid): its stored config, its verified last checkpoint, its remaining rounds.")] = None,
    config: Annotated[list[str] | None, typer.Option("--config", "-c", help="Any run-config KEY=VALUE (repeatable).")] = None,
    site_policy: Annotated[str | None, typer.Option(help="Site privacy policy (TOML) every simulated site runs under (default: the built-in one).")] = None,
    modality: Annotated[str, typer.Option(help="Simulated sites keep only DICOM files of these Modality codes, e.g. CR,DX (default: any).")] = "",
    body_part: Annotated[str, typer.Option(help="Simulated sites keep only DICOM files of these BodyPartExamined codes, e.g. CHEST (default: any).")] = "",
    as_json: Annotated[bool, typer.Option("--json", help="Print the stored run as JSON.")] = False,
    verbose: Annotated[bool, typer.Option(help="Show Flower's own logs.")] = False,
    quiet: Annotated[bool, typer.Option(help="No live progress display and warnings only (the display shows on terminals only).")] = False,
    mlflow: Annotated[str | None, typer.Option("--mlflow", help="Also log the run (config, metrics per round, robustness cells) to this MLflow tracking URI, e.g. file:///path/mlruns (needs fedaegis[mlflow]).")] = None,
) -> None:
    """Run a federated training and evaluation of simulated hospitals on Ray, and store it."""
    from .simulation import SimulationResources, check_client_gpus

    if verbose and quiet:
        _fail("--verbose and --quiet both set; give one")
    _setup_logging(verbose, quiet)
    if mlflow is not None:
        from .tracking import check_mlflow

        try:
            check_mlflow(mlflow)
        except ValueError as exc:
            _fail(str(exc))
    resources = SimulationResources(ray_address=ray_address, num_cpus=num_cpus, client_cpus=client_cpus,
                                    client_memory_mb=client_memory, client_gpus=client_gpus)
    try:
        check_client_gpus(resources)
    except ValueError as exc:
        _fail(str(exc))
    if site_policy:
        from ..shared.site.policy import PolicyError, SitePolicy

        try:
            SitePolicy.from_toml(site_policy)
        except PolicyError as exc:
            _fail(f"--site-policy: {exc}")
    if resume:
        overrides, sites = _resume_overrides(ctx, resume, db_url, sites)
        from .simulation import resume_policy_problem

        problem = resume_policy_problem(str(overrides["run-uuid"]), site_policy)
        if problem:
            _fail(problem)
        _preflight(overrides, sites, Names({"num-sites": "--sites", "db-url": "--db-url"}))
        console.print(f"[bold]fedaegis[/]: resuming run {resume} with {sites} simulated sites")
        _run_and_report(overrides, sites, resources, as_json, verbose, mlflow, site_policy, quiet)
        return
    if sites is not None and sites < 1:
        _fail(f"--sites: need at least 1 site, got {sites}")
    sites = 5 if sites is None else sites
    overrides: dict[str, Any] = {
        "num-server-rounds": rounds, "task": task, "dataset": dataset, "model": model, "norm": norm,
        "partitioning": partitioning, "dirichlet-alpha": alpha, "seed": seed,
        "local-epochs": local_epochs, "attacks": attacks, "epsilons": epsilons,
        "attack-samples": attack_samples, "run-name": name, "db-url": db_url or default_db_url(),
        "min-sites": min(2, sites), "modality": modality, "body-part": body_part,
    }
    names = {key: f"--{param.replace('_', '-')}" for key, param in OPTION_KEYS.items()}
    extra = _parse_overrides(config or [])
    for key in extra:
        param = next((p for k, p in OPTION_KEYS.items() if k == key), None)
        if param and ctx.get_parameter_source(param) not in (ParameterSource.DEFAULT, None):
            _fail(f"--{param.replace('_', '-')} and -c {key} both set; give it once")
        names[key] = f"-c {key}"
    overrides.update(extra)
    cfg = _preflight(overrides, sites, Names(names))
    console.print(
        f"[bold]fedaegis[/]: {sites} simulated sites, {cfg.num_server_rounds} rounds, model {cfg.model}, "
        f"data {cfg.dataset} ({cfg.partitioning})"
    )
    _run_and_report(cfg.to_flower(), sites, resources, as_json, verbose, mlflow, site_policy, quiet)


# run-config keys set by simulate's own options (the rest come with -c KEY=VALUE)
OPTION_KEYS = {"num-server-rounds": "rounds", "task": "task", "dataset": "dataset", "model": "model", "norm": "norm",
               "partitioning": "partitioning", "dirichlet-alpha": "alpha", "seed": "seed",
               "local-epochs": "local_epochs", "attacks": "attacks", "epsilons": "epsilons",
               "attack-samples": "attack_samples", "run-name": "name", "db-url": "db_url", "num-sites": "sites",
               "modality": "modality", "body-part": "body_part"}


def _preflight(overrides: dict[str, Any], sites: int, names: Names) -> RunConfig:
    """Every check of shared/run/preflight.py, before Ray starts or a row is written; one line and exit 2 on failure."""
    from ..shared.run.preflight import check_against_data, check_config, check_database, dataset_facts
    from .preflight import preflight

    try:
        check_database(str(overrides["db-url"]), names("db-url"))
        facts = None
        chosen = "image-size" not in overrides
        if overrides.get("task", "classification") == "classification":
            facts = dataset_facts(str(overrides.get("dataset", RunConfig.dataset)), overrides.get("num-classes"), names,
                                  spatial_dims=overrides.get("spatial-dims"))
            for message in facts.warnings:
                console.print(f"[yellow]warning:[/] {message}", highlight=False)
            for key, value in facts.run_config().items():
                overrides.setdefault(key, value)
        cfg = check_config({**overrides, "num-sites": sites}, names)
        if facts is not None:
            check_against_data(cfg, facts.run_config(), names)
        preflight(cfg, sites, names, database=False)
    except PreflightError as exc:
        _fail(str(exc))
    if facts is not None:
        from ..shared.data.transforms import SIZE_RULE

        console.print(f"[bold]fedaegis[/]: image size {cfg.image_size} px" + (
            f" (chosen from the data: {SIZE_RULE})" if chosen else ""), highlight=False)
        _print_skipped(cfg)
    return cfg


def _print_skipped(cfg: RunConfig) -> None:
    """One line: how many files the simulated sites skipped and why (each is named in the site log)."""
    from ..client.site import _load, simulated_key, skip_summary

    skipped = {**_load(cfg.dataset, "train", *simulated_key(cfg)).skipped,
               **_load(cfg.dataset, "test", *simulated_key(cfg)).skipped}
    if skipped:
        console.print(f"[yellow]sites:[/] skipped {skip_summary(skipped)}; each is named in {site_log_path()}",
                      highlight=False, soft_wrap=True)


# options that make up a run's configuration: a resumed run keeps its stored one
RUN_OPTIONS = ("rounds", "task", "dataset", "model", "norm", "partitioning", "alpha", "seed", "local_epochs",
               "attacks", "epsilons", "attack_samples", "name", "config", "modality", "body_part")


def _resume_overrides(ctx: typer.Context, ref: str, db_url: str | None, sites: int | None) -> tuple[dict[str, Any], int]:
    """The stored run's config (checked resumable: see fedaegis.server.resume) and its number of sites."""
    from ..server.resume import ResumeError, resume_point

    given = [f"--{p.replace('_', '-')}" for p in RUN_OPTIONS
             if ctx.get_parameter_source(p) not in (ParameterSource.DEFAULT, None)]
    if given:
        _fail(f"--resume goes on with the run's stored configuration; {', '.join(given)} cannot change it")
    url = db_url or default_db_url()
    try:
        point = resume_point(RunStore(url), ref, url)
    except (RunNotFoundError, ResumeError) as exc:
        _fail(str(exc))
    sites = sites or point.cfg.num_sites
    if not sites:
        _fail(f"run {ref} does not record how many sites it simulated; pass --sites (the number it started with)")
    return point.cfg.to_flower(), sites


def _run_and_report(overrides: dict[str, Any], sites: int, resources: Any, as_json: bool, verbose: bool,
                    mlflow: str | None = None, site_policy: str | None = None, quiet: bool = False) -> None:
    """Run, then print the stored run; a run that failed (or was interrupted) exits non-zero with its reason."""
    import uuid as uuidlib

    from .runtime import RuntimeFailure
    from .simulation import simulate as run_sim
    from ..server.app import RunFailed

    overrides = {**overrides, "run-uuid": overrides.get("run-uuid") or uuidlib.uuid4().hex}
    store = RunStore(str(overrides["db-url"]))
    from .progress import live

    try:
        with live(console, enabled=not quiet) as progress:  # on a terminal only: CI keeps the plain lines
            run_uuid = run_sim(overrides, sites, resources, verbose=verbose, site_policy=site_policy,
                               progress=progress)
    except KeyboardInterrupt:
        _mark(store, str(overrides["run-uuid"]), "interrupted", "interrupted (Ctrl-C); go on with --resume")
        console.print(f"interrupted: run {overrides['run-uuid']} is stored as interrupted; "
                      f"`fedaegis simulate --resume {overrides['run-uuid']}` goes on with it", soft_wrap=True)
        _exit_now(130)
    except RunFailed:
        run_uuid = str(overrides["run-uuid"])
    except RuntimeFailure as exc:  # Flower says the run failed: the ServerApp stored why, or died first
        run_uuid = str(overrides["run-uuid"])
        _mark(store, run_uuid, "failed", str(exc))
    except (ConfigError, ValueError) as exc:
        _fail(str(exc))
    except Exception as exc:  # the runtime died: the run is stored as failed, with why
        _mark(store, str(overrides["run-uuid"]), "failed", f"{type(exc).__name__}: {exc}")
        raise
    try:
        run = store.get_run(run_uuid)
    except RunNotFoundError:
        _fail("the run did not start (see the log above); nothing was stored", code=1)
    if mlflow and run["status"] == "completed":
        from .tracking import log_run

        mlflow_id = log_run(run, mlflow, db_url=str(overrides["db-url"]))
        console.print(f"MLflow run {mlflow_id} in {mlflow}", markup=False, highlight=False)
    if as_json:
        out.print_json(json.dumps(_run_json(run)))
    else:
        _print_run(run)
    if run["status"] != "completed":
        _fail(f"run {run['id']} {run['status']}: {run['error']}", code=1)


def _exit_now(code: int) -> None:
    """Exit although Flower's ServerApp thread still waits for replies (it would keep the process alive)."""
    if "ray" in sys.modules:
        import ray

        ray.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _mark(store: RunStore, run_uuid: str, status: str, error: str) -> None:
    """Store how a run ended when its server could not (Ctrl-C, a dead runtime)."""
    try:
        run = store.get_run(run_uuid)
    except RunNotFoundError:
        return
    if run["status"] == "running":
        store.finish_run(run["id"], status=status, error=error)


@app.command("runs")
def list_runs(
    db_url: DbOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List stored runs."""
    store = _open_store(db_url)
    runs = store.list_runs()
    if as_json:
        full = [store.get_run(r["id"]) for r in runs]
        out.print_json(json.dumps({"schema": JSON_SCHEMA, "runs": [_run_json(r) for r in full]}))
        return
    table = Table(title=f"runs in {store.engine.url.render_as_string(hide_password=True)}")
    for col in ("id", "name", "status", "rounds", "created", "accuracy"):
        table.add_column(col)
    dashes = False
    for summary in runs:
        detail = store.get_run(summary["id"])
        last = detail["rounds"][-1]["metrics"] if detail["rounds"] else {}
        acc = last.get("evaluate.accuracy")
        dashes |= acc is None
        table.add_row(
            str(summary["id"]), summary["name"], summary["status"],
            f"{summary['rounds_completed']}/{summary['num_rounds']}", summary["created_at"][:19],
            f"{acc:.4f}" if acc is not None else "-",
        )
    out.print(table)
    if dashes:
        out.print(WITHHELD_LEGEND, highlight=False)


@app.command()
def show(
    run: Annotated[str, typer.Argument(help="Run id or uuid.")],
    db_url: DbOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show a stored run: its configuration and per-round metrics."""
    store = _open_store(db_url)
    try:
        detail = store.get_run(run)
    except RunNotFoundError as exc:
        _fail(str(exc))
    if as_json:
        out.print_json(json.dumps(_run_json(detail)))
    else:
        _print_run(detail, with_config=True)


@app.command()
def evaluate(
    run: Annotated[str, typer.Argument(help="Run id or uuid whose final global model is attacked.")],
    dataset: Annotated[str | None, typer.Option(help="Local data: a MedMNIST .npz, an image/DICOM folder, or embedded:NAME (default: the run's own dataset).", show_default=False)] = None,
    split: Annotated[str, typer.Option(help="Split of the dataset to attack.")] = "test",
    attacks: Annotated[str, typer.Option(help="Comma-separated attack suite.")] = "fgsm,pgd",
    epsilons: Annotated[str, typer.Option(help="Budgets, e.g. 1/255,2/255,4/255,8/255.")] = "1/255,2/255,4/255,8/255",
    samples: Annotated[int, typer.Option(help="Samples attacked (0: all).")] = 256,
    seed: Annotated[int, typer.Option(help="Seed for sampling and random starts.")] = 0,
    db_url: DbOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    verbose: Annotated[bool, typer.Option(help="A line per attack and batch done, with elapsed and remaining time.")] = False,
    quiet: Annotated[bool, typer.Option(help="No progress display (it shows on terminals only).")] = False,
    device: Annotated[str, typer.Option(help="Where the attacks run: cuda, cuda:N or cpu (default: the first CUDA device if there is one, as at a site).", show_default=False)] = "",
) -> None:
    """Attack a stored run's global model on a local dataset (one site, no federation)."""
    import torch

    from ..client.robustness import attack_subset
    from ..shared.attacks import evaluate_attacks, targeted_labels
    from ..shared.models.checkpoint import load_checkpoint
    from ..shared.data import DataValidationError, load_site_data
    from ..shared.results.robustness import derive, encode, decode

    from ..shared.run.preflight import dataset_facts
    from ..shared.training import resolve_device

    store = _open_store(db_url)
    try:
        on = resolve_device(device)  # named before any data is read: a missing GPU is a one-line error
        cfg = RunConfig.from_flower({"attacks": attacks, "epsilons": epsilons, "attack-samples": samples})
        stored = store.get_run(run)
        dataset = dataset or str(stored["config"].get("dataset") or "")
        if not dataset:
            _fail(f"run {run} does not record its dataset; pass --dataset")
        model, meta = load_checkpoint(store.checkpoint_path(run))
        if meta.get("task", "classification") != "classification":
            _fail(f"run {run} is a {meta['task']} run; evaluate attacks classifiers")
        facts = dataset_facts(dataset, None, Names({"dataset": "--dataset"}))
        differ = [f"{what} {have} (the model's: {want})" for what, have, want in (
            ("classes", facts.num_classes, meta["num_classes"]), ("channels", facts.in_channels, meta["in_channels"]),
            ("spatial dimensions", facts.spatial_dims, meta["spatial_dims"])) if have != want]
        if differ:
            _fail(f"--dataset {dataset} does not match run {run}'s model: " + ", ".join(differ))
        data = load_site_data(
            dataset, split=split, image_size=(meta["image_size"],) * meta["spatial_dims"],
            channels=meta["in_channels"], num_classes=meta["num_classes"], seed=seed,
        )
    except PreflightError as exc:
        _fail(str(exc))
    except (ConfigError, RunNotFoundError, FileNotFoundError, DataValidationError, ValueError) as exc:
        _fail(str(exc))
    if verbose and quiet:
        _fail("--verbose and --quiet both set; give one")
    subset = attack_subset(data, samples, seed)  # kept as stored: the suite draws its batches onto the model's device
    model = model.to(on)
    torch.manual_seed(seed)
    results = _attack_with_progress(lambda progress: evaluate_attacks(
        model, (subset.images, subset.labels), cfg.attack_suite, cfg.epsilon_values, progress=progress),
        verbose=verbose, quiet=quiet)
    cells = [
        {"attack": a, "epsilon": e, **{k.replace("-", "_"): v for k, v in {**t, **derive(t)}.items()}}
        for (a, e), t in sorted(decode(encode(
            results, targeted=targeted_labels(cfg.attack_suite, cfg.epsilon_values))).items())
    ]
    if as_json:
        out.print_json(json.dumps({"schema": JSON_SCHEMA, "run": run, "dataset": dataset, "split": split, "samples": len(subset),
                                   "skipped": data.num_skipped, "results": cells}))
        return
    table = Table(title=f"run {run} on {dataset} ({split}, {len(subset)} samples)")
    for col in ("attack", "eps", "clean", "robust", "success", "Linf", "L2", "queries"):
        table.add_column(col, justify="right")
    for c in cells:
        table.add_row(
            c["attack"], _eps(c["epsilon"]), _fmt(c.get("clean_accuracy"), ".3f"),
            _fmt(c.get("robust_accuracy"), ".3f"), _fmt(c.get("success_rate"), ".3f"),
            _fmt(c.get("mean_linf"), ".4f"), _fmt(c.get("mean_l2"), ".3f"), _fmt(c.get("mean_queries"), ".1f"),
        )
    out.print(table)
    if data.num_skipped:
        out.print(f"files skipped (unreadable or rejected): {data.num_skipped}")


def _attack_with_progress(run: Any, verbose: bool, quiet: bool) -> Any:
    """``run(progress)`` with a progress bar on a terminal, and a line per step with ``verbose``."""
    import time

    from .progress import attack_progress, duration

    bar = attack_progress(console, enabled=not quiet)
    start = time.monotonic()

    def progress(done: int, total: int, label: str) -> None:
        if bar is not None:
            bar.update(task, completed=done, total=total, description=f"attacking ({label})")
        if verbose:
            spent = time.monotonic() - start
            console.print(f"{label}: {done}/{total} (samples x attack runs), elapsed {duration(spent)}, "
                          f"left ~{duration(spent * (total - done) / done)}", highlight=False)

    if bar is None:
        return run(progress)
    with bar:
        task = bar.add_task("attacking", total=None)
        return run(progress)


# the per-round fields of --json, from the stored metric they show
ROUND_FIELDS = {"accuracy": "evaluate.accuracy", "loss": "evaluate.loss", "train_accuracy": "train.train-accuracy",
                "train_loss": "train.train-loss", "num_examples": "evaluate.num-examples"}
WITHHELD_LEGEND = "-: withheld (min-cell-size, metric-dp budget) or not reported; never a zero"


def withheld_reason(metrics: dict[str, float], phase: str) -> str:
    """Why ``phase``'s accuracy/loss of a round are absent: the site protection that withheld them."""
    suppressed, dp = metrics.get(f"{phase}.suppressed-count", 0), metrics.get(f"{phase}.dp-withheld-count", 0)
    if suppressed:
        return f"withheld: {int(suppressed)} site(s) had fewer than min-cell-size samples"
    if dp:
        return f"withheld: {int(dp)} site(s) had spent their metric-dp budget"
    return "not reported by any site"


def _run_json(run: dict[str, Any]) -> dict[str, Any]:
    """The stable script-facing form (schema 1, see README "Scripting"): id, config and global metrics per round.

    Field names are snake_case; ``config`` is keyed by run-config key and ``metrics`` by stored
    metric name, as written. A value a site protection withheld is null, with its reason in ``withheld``.
    """
    keep = ("id", "uuid", "name", "status", "error", "num_rounds", "created_at", "finished_at",
            "checkpoint_path", "config")
    result: dict[str, Any] = {"schema": JSON_SCHEMA, **{k: run[k] for k in keep}}
    result["rounds"] = []
    for r in run["rounds"]:
        m = r["metrics"]
        fields = {name: m.get(metric) for name, metric in ROUND_FIELDS.items()}
        withheld = {name: withheld_reason(m, ROUND_FIELDS[name].split(".")[0])
                    for name, value in fields.items() if value is None and name != "num_examples"}
        result["rounds"].append({
            "round": r["number"], **fields,
            "sites": r["evaluate_replies"],
            "failures": r["failures"],
            "withheld": withheld,
            "metrics": m,
            "robustness": query.cells(r, "attacks"),
            "transfer": query.cells(r, "transfer"),
            "defences": defence_cells(r),
            "detection": query.cells(r, "detection"),
            "landscape": query.cells(r, "landscape"),
            "refusals": [{"site": node, "request": row["attack"], "field": row["name"]}
                         for node, row in query.site_rows(r, "refusals")],
        })
    return result


def _eps(eps: float) -> str:
    return eps_display(eps)


def _fmt(value: float | None, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


def _print_run(run: dict[str, Any], with_config: bool = False) -> None:
    if with_config:
        cfg = Table(title="configuration", show_header=False)
        for key, value in run["config"].items():
            cfg.add_row(key, str(value))
        out.print(cfg)
    table = Table(title=f"run {run['id']} {run['name']} [{run['status']}]")
    for col in ("round", "train loss", "train acc", "test loss", "test acc", "test n", "sites", "failures"):
        table.add_column(col, justify="right")
    for r in run["rounds"]:
        m = r["metrics"]
        table.add_row(
            str(r["number"]), _fmt(m.get("train.train-loss")), _fmt(m.get("train.train-accuracy")),
            _fmt(m.get("evaluate.loss")), _fmt(m.get("evaluate.accuracy")),
            _fmt(m.get("evaluate.num-examples"), ".0f"), str(r["evaluate_replies"]), str(r["failures"]),
        )
    out.print(table)
    if any(v is None for r in run["rounds"] for v in (r["metrics"].get(k) for k in ROUND_FIELDS.values())):
        out.print(WITHHELD_LEGEND, highlight=False)
    print_families(run, out)
    skipped = run["rounds"][-1]["metrics"].get("evaluate.skipped") if run["rounds"] else None
    out.print(f"run id {run['id']} (uuid {run['uuid']}), status {run['status']}")
    if run.get("error"):
        out.print(f"why: {mask_secrets(run['error'], _secrets())}", highlight=False, markup=False)
    if skipped:
        out.print(_skipped_line(run, skipped), highlight=False)
    if run["checkpoint_path"]:
        out.print(f"final global model: {run['checkpoint_path']}")


def _skipped_line(run: dict[str, Any], skipped: float) -> str:
    """The final round's count of files the sites skipped, read against its DP noise when there is some."""
    from ..shared.results.basics import FILES_PER_PATIENT

    last = run["rounds"][-1]
    std = next((r["value"] for r in query.rows(last, "privacy") if r["name"] == "noise-std"), 0.0)
    line = f"files skipped by the sites (unreadable or rejected): {int(skipped)}"
    if not std:
        return line
    # each site noises its count (a patient may own FILES_PER_PATIENT files) and clamps it at 0
    half = 1.96 * std * FILES_PER_PATIENT * math.sqrt(max(1, last["evaluate_replies"]))
    if skipped <= half:
        return (f"files skipped by the sites: none detectable under the sites' DP noise ({int(skipped)}, "
                f"95% noise interval +-{half:.0f}, and each site clamps its noisy count at 0); each site's own "
                "log names the files it skipped")
    return f"{line} (DP-noised: +-{half:.0f} at 95%; each site's own log names the files it skipped)"


def _register_commands() -> None:
    from . import audit, privacy_view, report, runtime, site_cli, survey, sweep_cli

    site_cli.register(app)
    privacy_view.register(app)
    report.register(app)
    audit.register(app)
    sweep_cli.register(app)
    runtime.register(app)
    survey.register(app)


_register_commands()


def main() -> None:
    """The ``fedaegis`` entry point: an unexpected error is one masked line (``--debug``: its traceback)."""
    try:
        app()
    except Exception as exc:  # noqa: BLE001 - anything typer did not handle: never a traceback with locals
        import traceback

        from rich.markup import escape

        secrets = _secrets()
        line = mask_secrets(" ".join(f"{type(exc).__name__}: {exc}".split()), secrets)
        console.print(f"[bold red]error:[/] {escape(line[:500])}" + ("" if _debug else " (--debug shows the traceback)"),
                      soft_wrap=True)
        if _debug or "--debug" in sys.argv[1:]:
            console.print(escape(mask_secrets(traceback.format_exc(), secrets)), highlight=False)
        sys.exit(1)
