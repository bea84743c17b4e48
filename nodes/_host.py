"""Small, version-tolerant access to host services used by several nodes.

Everything here degrades gracefully when a service is missing (for example the
PromptServer in a script or a test without a server).
"""
import logging

log = logging.getLogger("atelier")


def send_event(event, payload):
    """Send a frontend event through the PromptServer if one is running; never raise."""
    try:
        from server import PromptServer
        inst = getattr(PromptServer, "instance", None)
        if inst is not None:
            inst.send_sync(event, payload, getattr(inst, "client_id", None))
            return True
    except Exception as exc:  # no server (tests, scripts) or an old host
        log.debug("atelier: could not send %s: %s", event, exc)
    return False


def progress_bar(total):
    """The host's progress bar (shown on the running node), or a no-op stand-in."""
    try:
        import comfy.utils
        return comfy.utils.ProgressBar(total)
    except Exception:
        class _Null:
            def update(self, n):
                pass

            def update_absolute(self, value, total=None, preview=None):
                pass
        return _Null()


def output_directory():
    import folder_paths
    return folder_paths.get_output_directory()


def output_subfolder(subfolder):
    """``subfolder`` inside ComfyUI's output folder, created and checked writable; a path that leaves
    the output folder (``..``, absolute) is refused with a ValueError naming it."""
    from ..restoration.scanio import prepare_out_dir, safe_path
    return prepare_out_dir(safe_path(output_directory(), subfolder))


def throw_if_interrupted():
    import comfy.model_management
    comfy.model_management.throw_exception_if_processing_interrupted()


def detect_unet_config(shapes):
    """The host's own detection (``comfy.model_detection.detect_unet_config``) of a checkpoint from its tensor
    shapes only (``{key: shape}``, e.g. a .safetensors header; meta tensors, nothing read): its ``unet_config``
    (``image_model`` for the DiT families), or None where the host recognises nothing."""
    try:
        import torch
        import comfy.model_detection as md
        sd = {k: torch.empty(tuple(s), device="meta") for k, s in shapes.items()}
        prefix = md.unet_prefix_from_state_dict(sd)   # a checkpoint's; a diffusion-model file has none
        if not any(k.startswith(prefix) for k in sd):
            prefix = ""
        return md.detect_unet_config(sd, prefix)
    except Exception as exc:  # a file the host's detection does not expect (it reads keys it assumes)
        log.debug("atelier: host detection failed on the file's shapes: %s", exc)
        return None


def add_routes(register):
    """Call ``register(routes)`` with the PromptServer's aiohttp route table, if a server runs."""
    try:
        from server import PromptServer
        inst = getattr(PromptServer, "instance", None)
        if inst is not None:
            register(inst.routes)
            return True
    except Exception as exc:
        log.debug("atelier: no routes registered: %s", exc)
    return False


#: The one contract between a cache that runs the block stack on part of the batch (MagCache) and code that
#: patches inside the blocks (NAG): for the duration of one model call, ``transformer_options[BLOCK_ROWS_KEY]``
#: holds an object whose ``compute_rows`` (a LongTensor) lists the batch rows the blocks run, in the order the
#: blocks see them. Absent: the blocks run every row. Read it with :func:`block_rows`.
BLOCK_ROWS_KEY = "atelier_block_rows"


def block_rows(to):
    """The batch rows the block stack runs in this call (a list of ints, in order), or None for all rows
    (the :data:`BLOCK_ROWS_KEY` contract)."""
    rows = getattr(to.get(BLOCK_ROWS_KEY), "compute_rows", None) if isinstance(to, dict) else None
    return None if rows is None else rows.tolist()


def find_transformer_options(args, kwargs):
    """The transformer_options dict of a wrapped model call, by name, not by position."""
    to = kwargs.get("transformer_options")
    if isinstance(to, dict):
        return to
    for a in reversed(args):
        if isinstance(a, dict) and "cond_or_uncond" in a:
            return a
    return None


def fresh_run_wrapper(key, finish, prepare=None):
    """An ``OUTER_SAMPLE`` wrapper that gives each sampling run its own state: the guider's
    ``model_options`` are cloned for the run and ``transformer_options[key]`` replaced by its ``fresh()``
    copy (or by ``prepare(fresh, executor, args, kwargs)`` when given: state chosen from the run's
    sigmas, latent and sampler); in ``finally`` ``finish(state, interrupted)`` runs (a line it returns
    is logged) and the guider's options are put back, so an interrupted run leaves nothing behind."""
    def wrapper(executor, *args, **kwargs):
        import comfy.model_patcher
        guider = executor.class_obj
        orig = guider.model_options
        guider.model_options = comfy.model_patcher.create_model_options_clone(orig)
        to = guider.model_options["transformer_options"]
        interrupted = True
        state = None
        try:
            state = to[key].fresh()
            if prepare is not None:
                state = prepare(state, executor, args, kwargs)
            to[key] = state
            out = executor(*args, **kwargs)
            interrupted = False
            return out
        finally:
            try:
                line = finish(state, interrupted) if state is not None else None
                if line:
                    log.info(line)
            finally:
                guider.model_options = orig
    return wrapper


def call_with(to, key, plan, executor, *args, **kwargs):
    """``executor(*args, **kwargs)`` with ``plan`` in ``to[key]`` (``transformer_options``) for the call and
    removed after it, also on error; a None plan runs the call as it is."""
    if plan is None:
        return executor(*args, **kwargs)
    to[key] = plan
    try:
        return executor(*args, **kwargs)
    finally:
        to.pop(key, None)
