"""The Gradio layout of the demo. Only components and wiring live here; the logic is in
:mod:`erasekit.demo.callbacks`, whose functions the tests call directly.

The server listens on 127.0.0.1 unless told otherwise, never makes a share link and sends no analytics.
"""

from __future__ import annotations

import atexit
import inspect
import logging
import os
from collections.abc import Sequence

from . import callbacks as cb
from .catalog import ModelCatalog, default_choices
from .validation import MAX_SEED, Limits

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
SYSTEM_FONTS = ["ui-sans-serif", "system-ui", "sans-serif"]  # no web fonts: the page loads nothing from outside
INTRO = (
    "# erasekit demo\n"
    "Erase a concept from an image generator, compare images before and after with the same seeds, and score the "
    "erasure. Patches stay on this server for the session; download them below."
)


def _gradio():
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio as gr
    except ImportError:
        raise ValueError("The demo needs gradio: pip install 'erasekit[demo]'.") from None
    return gr


def _theme(gr):
    return gr.themes.Default(font=SYSTEM_FONTS, font_mono=["ui-monospace", "monospace"])


def _supported(fn, **kwargs) -> dict:
    """The keyword arguments ``fn`` accepts (gradio moved some between major versions)."""
    params = inspect.signature(fn).parameters
    return {k: v for k, v in kwargs.items() if k in params}


def build_app(server: cb.DemoServer):
    """The ``gr.Blocks`` app for ``server``: a model picker and the Erase, Compare and Evaluate tabs.

    Example:
        >>> server = cb.DemoServer(ModelCatalog(default_choices()))
        >>> build_app(server).launch(server_name="127.0.0.1")
    """
    gr = _gradio()
    limits, catalog = server.limits, server.catalog
    blocks_kw = _supported(gr.Blocks.__init__, theme=_theme(gr))  # gradio < 6 takes the theme here, 6 in launch()
    with gr.Blocks(title="erasekit demo", analytics_enabled=False, **blocks_kw) as demo:
        session = gr.State(  # per browser tab; closed when the tab goes or after limits.session_idle_seconds
            None,
            **_supported(gr.State.__init__, delete_callback=_close_session, time_to_live=limits.session_idle_seconds),
        )
        gr.Markdown(INTRO)
        with gr.Row():
            model = gr.Dropdown(
                catalog.dropdown(), value=catalog.default_key(), label="Model", elem_id="model", scale=1
            )
            model_status = gr.Markdown(elem_id="model-status")

        with gr.Tab("Erase", id="erase"):
            with gr.Row():
                with gr.Column():
                    method = gr.Dropdown([], label="Method", elem_id="method")
                    concept = gr.Textbox(label="Concept to erase", placeholder="Watercolor style", elem_id="concept")
                    anchor = gr.Textbox(label="Anchor (optional)", placeholder="a painting", elem_id="anchor")
                    steps = gr.Slider(1, limits.max_erase_steps, value=100, step=1, label="Steps", elem_id="steps")
                    with gr.Row():
                        lr = gr.Number(1e-5, label="Learning rate", elem_id="lr")
                        seed = gr.Number(0, label="Seed", precision=0, minimum=0, maximum=MAX_SEED)
                        rank = gr.Slider(1, limits.max_lora_rank, value=8, step=1, label="LoRA rank")
                    with gr.Accordion("More options", open=False, elem_id="options-accordion"):
                        options = gr.Textbox(label="key=value, one per line", lines=3, elem_id="options")
                        options_help = gr.Markdown()
                    with gr.Row():
                        erase_button = gr.Button("Erase", variant="primary", elem_id="erase-button")
                        stop_button = gr.Button("Stop", variant="stop", elem_id="stop-button")
                with gr.Column():
                    erase_status = gr.Markdown(elem_id="erase-status")
                    patch_file = gr.File(
                        label="Patch (.safetensors)", interactive=False, height=90, elem_id="patch-file"
                    )
                    lora_file = gr.File(label="LoRA (.safetensors)", interactive=False, height=90, elem_id="lora-file")

        with gr.Tab("Compare", id="compare"):
            with gr.Row():
                prompt = gr.Textbox("a cat", label="Prompt", max_length=limits.max_prompt_chars, elem_id="prompt")
                c_seed = gr.Number(0, label="First seed", precision=0, minimum=0, maximum=MAX_SEED)
            with gr.Row():
                c_images = gr.Slider(1, limits.max_images, value=2, step=1, label="Images")
                c_steps = gr.Slider(
                    1, limits.max_sample_steps, value=25, step=1, label="Sampler steps", elem_id="compare-steps"
                )
                c_guidance = gr.Slider(0, limits.max_guidance, value=7.5, step=0.5, label="Guidance")
            with gr.Row():
                c_patches = gr.CheckboxGroup([], label="Patches (several are composed)", elem_id="compare-patches")
                c_scale = gr.Slider(0, 1, value=1, step=0.05, label="Patch scale (0 = base model)")
            compare_button = gr.Button("Generate", variant="primary", elem_id="compare-button")
            compare_status = gr.Markdown(elem_id="compare-status")
            with gr.Row():
                before = gr.Gallery(label="Before", columns=limits.max_images, height=300, elem_id="before-gallery")
                after = gr.Gallery(label="After", columns=limits.max_images, height=300, elem_id="after-gallery")

        with gr.Tab("Evaluate", id="evaluate"):
            with gr.Row():
                e_target = gr.Dropdown([], label="Target (style:NAME or object:NAME)", elem_id="eval-target")
                e_patches = gr.CheckboxGroup([], label="Patches (several are composed)", elem_id="eval-patches")
                e_scale = gr.Slider(0, 1, value=1, step=0.05, label="Patch scale")
            with gr.Row():
                e_seeds = gr.Slider(1, limits.max_eval_seeds, value=1, step=1, label="Seeds per prompt")
                e_steps = gr.Slider(1, limits.max_sample_steps, value=25, step=1, label="Sampler steps")
                e_full = gr.Checkbox(False, label="Also CLIP metrics and FID (slower)")
                e_base = gr.Checkbox(True, label="Also score the base model")
            eval_button = gr.Button("Evaluate", variant="primary", elem_id="eval-button")
            eval_status = gr.Markdown(elem_id="eval-status")
            table = gr.Dataframe(label="UA / IRA / CRA", interactive=False, elem_id="eval-table")
            with gr.Row():
                eval_grid = gr.Image(label="Grid (target row framed in red)", type="filepath", interactive=False)
                with gr.Column():
                    eval_json = gr.File(label="Report (.json)", interactive=False, height=90)
                    eval_markdown = gr.Markdown()

        # ---- wiring ---------------------------------------------------------------------------------------------
        erase_progress, eval_progress = gr.Progress(), gr.Progress(track_tqdm=True)  # gradio fills these in

        def model_outputs(sess, status):
            names = sess.patch_names() if sess else []
            methods = cb.run_safely(cb.methods_for, server, sess)[0] or []
            targets, error = cb.run_safely(cb.eval_targets, server, sess)
            return (
                sess,
                gr.update(value=sess.model_key if sess else None),
                status if not error else f"{status}\n\n{error}",
                gr.update(choices=methods, value=cb.default_method(methods)),
                gr.update(choices=names, value=[]),
                gr.update(choices=names, value=[]),
                gr.update(choices=targets or [], value=(targets or [None])[0]),
            )

        model_targets = [session, model, model_status, method, c_patches, e_patches, e_target]

        def on_load():
            sess = server.new_session()
            status, error = cb.run_safely(cb.select_model, server, sess, sess.model_key)
            return model_outputs(sess, status or error)

        def on_model(sess, key):
            status, error = cb.run_safely(cb.select_model, server, sess, key)
            return model_outputs(sess, status or error)

        def on_method(name):
            form, error = cb.run_safely(cb.method_form, server, name)
            if form is None:
                return gr.update(), gr.update(), gr.update(), error
            return form.steps, form.lr, form.seed, form.help

        def on_erase(sess, method, concept, anchor, steps, lr, seed, rank, options, progress=erase_progress):
            result, error = cb.run_safely(
                cb.erase,
                server,
                sess,
                method,
                concept,
                anchor,
                steps,
                lr,
                seed,
                rank,
                options,
                progress=lambda fraction, text: progress(fraction, desc=text),
            )
            names = sess.patch_names() if isinstance(sess, cb.DemoSession) else []
            if result is None:
                return error, None, None, gr.update(choices=names), gr.update(choices=names)
            files = (str(result.patch_file), str(result.lora_file) if result.lora_file else None)
            return (
                result.message,
                *files,
                gr.update(choices=names, value=[result.name]),
                gr.update(choices=names, value=[result.name]),
            )

        def on_compare(sess, *inputs):
            result, error = cb.run_safely(cb.compare, server, sess, *inputs)
            if result is None:
                return error, None, None
            return result.message, result.before, result.after

        def on_evaluate(sess, target, names, scale, seeds, steps, full, base, progress=eval_progress):
            result, error = cb.run_safely(cb.evaluate, server, sess, target, names, scale, seeds, steps, full, base)
            if result is None:
                return error, None, None, None, ""
            frame = {"headers": result.columns, "data": result.rows}
            return result.message, frame, str(result.grid_file), str(result.json_file), result.markdown

        demo.load(on_load, outputs=model_targets)
        model.input(on_model, [session, model], model_targets)
        method.change(on_method, method, [steps, lr, seed, options_help])
        erase_button.click(
            on_erase,
            [session, method, concept, anchor, steps, lr, seed, rank, options],
            [erase_status, patch_file, lora_file, c_patches, e_patches],
        )
        # Stop runs outside the queue (the erasure it stops holds the slot), which frees when that erasure ends at
        # its next step and reports it; gradio's own cancel would free the slot while the job's thread still ran
        stop_button.click(cb.cancel, session, erase_status, queue=False)
        compare_button.click(
            on_compare,
            [session, prompt, c_seed, c_images, c_steps, c_guidance, c_patches, c_scale],
            [compare_status, before, after],
        )
        eval_button.click(
            on_evaluate,
            [session, e_target, e_patches, e_scale, e_seeds, e_steps, e_full, e_base],
            [eval_status, table, eval_grid, eval_json, eval_markdown],
        )
    return demo


def _close_session(session) -> None:
    if isinstance(session, cb.DemoSession):
        session.close()


def serve(server: cb.DemoServer, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, block: bool = True):
    """Serve the demo of ``server`` on ``host:port``; loopback unless told otherwise, no share link, no analytics.

    Args:
        block: wait until interrupted; ``False`` returns at once (tests), and ``demo.close()`` stops the server.

    Returns:
        The launched ``gr.Blocks``.
    """
    gr = _gradio()
    if host not in ("127.0.0.1", "localhost", "::1"):
        logger.warning("The demo listens on %s: anyone who can reach this address can run jobs on this machine.", host)
    demo = build_app(server)
    # jobs from every tab share one queue: limits.concurrent_jobs run at once, at most limits.max_queue wait
    demo.queue(default_concurrency_limit=server.limits.concurrent_jobs, max_size=server.limits.max_queue)
    kwargs = _supported(
        demo.launch,
        theme=_theme(gr),
        ssr_mode=False,
        footer_links=["gradio"],
        show_api=False,
        enable_monitoring=False,
    )
    demo.launch(
        server_name=host,
        server_port=port,
        share=False,
        inbrowser=False,
        prevent_thread_lock=not block,
        show_error=False,
        quiet=not block,
        **kwargs,
    )
    return demo


def launch(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    model_dirs: Sequence[str] = (),
    device: str | None = None,
    limits: Limits | None = None,
    block: bool = True,
):
    """Serve the demo with the default model list: shipped MiniCanvas, tiny-sd, ``model_dirs`` and MiniFaces.

    Args:
        model_dirs: local diffusers folders or MiniCanvas world folders (the browser never names a path).
        device: where models load (default CUDA if present).
        limits: bounds on what a browser may ask for (default :class:`Limits`).

    Example:
        >>> launch(port=7860, model_dirs=["worlds/minicanvas"])
    """
    server = cb.DemoServer(ModelCatalog(default_choices(model_dirs, device=device)), limits)
    atexit.register(server.close)
    return serve(server, host, port, block)
