#!/usr/bin/env python3
"""Break the code on purpose and check that the tests notice (mutation checks).

Each ``Mutation`` below replaces one exact piece of source text (it must occur exactly
once) in a scratch copy of the working tree, runs each test that guards that code, and
reports per test "caught" (it failed) or "SURVIVED" (it still passes: it guards nothing).
The working tree itself is never edited. test/MUTATIONS.md records the last results.

    .venv/bin/python tools/mutations.py                 # every mutation
    .venv/bin/python tools/mutations.py grpo-removed    # the named ones
    .venv/bin/python tools/mutations.py --list
    .venv/bin/python tools/mutations.py --baseline ...  # also run the tests unmutated first

The copy holds the tracked and untracked-but-not-ignored files; a ``lens_training`` link to
``training/`` makes the copy's training package win over the editable install's.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutation:
    name: str
    path: str  # file to break, relative to the repository root
    old: str  # exact text, found exactly once
    new: str
    tests: tuple[str, ...]  # pytest node ids that must fail
    what: str  # the break, in words


MUTATIONS: list[Mutation] = [
    # -- training --------------------------------------------------------------------------
    Mutation(
        "grpo-removed",
        "training/stage2.py",
        "loss = policy_loss + cfg.seg_loss_weight * seg_loss",
        "loss = cfg.seg_loss_weight * seg_loss",
        (
            "test/training/test_stages.py::test_stage2_gradient_is_the_grpo_policy_gradient_of_rewards_that_differ",
            "test/training/test_resume.py::test_stage2_resume_reproduces_sampling_and_weights",
        ),
        "the GRPO term removed from the stage-2 loss",
    ),
    Mutation(
        "grpo-advantage-sign",
        "training/grpo.py",
        "return ((grouped - mean) / (std.clamp(min=std_floor) + eps)).view(-1)",
        "return ((mean - grouped) / (std.clamp(min=std_floor) + eps)).view(-1)",
        (
            "test/training/test_grpo.py",
            "test/training/test_stages.py::test_stage2_gradient_is_the_grpo_policy_gradient_of_rewards_that_differ",
        ),
        "group advantages with the wrong sign",
    ),
    # -- model -----------------------------------------------------------------------------
    Mutation(
        "drafts-unchecked",
        "lens_ros/model/decoding.py",
        "n_ok = next((j for j, tok in enumerate(draft) if greedy[j] != tok), len(draft))",
        "n_ok = len(draft)",
        ("test/model/test_speculative.py",),
        "speculative decoding accepts every drafted token without checking it",
    ),
    Mutation(
        "fallback-mask-deleted",
        "lens_ros/model/pipeline.py",
        "        result = self._result(decoded, expression, timings, fallback_box=parsed_box)\n",
        "        result = self._result(decoded, expression, timings, fallback_box=parsed_box)\n"
        "        if parsed.box is None:  # no box: no mask either\n"
        "            result.masks, result.boxes, result.scores, result.labels = "
        "result.masks[:0], result.boxes[:0], result.scores[:0], []\n",
        (
            "test/model/test_pipeline.py::test_segment_returns_masks_at_input_resolution",
            "test/reliability/test_bad_input_matrix.py::test_unparsable_mllm_answer_falls_back_to_the_context_queries",
        ),
        "an unparsable answer gives no mask (the context queries' fallback mask deleted)",
    ),
    Mutation(
        "onnx-never-built",
        "lens_ros/model/pipeline.py",
        "self.segmenter = OnnxSegmenter.from_segmenter(self.model.segmenter, onnx_dir, device=self.device)",
        "del OnnxSegmenter  # the torch segmenter stays",
        (
            "test/model/test_pipeline.py::test_pipeline_with_onnx_backend",
            "test/ros/test_node_model.py::test_onnx_segmenter_backend_parameter_reaches_the_pipeline",
        ),
        "segmenter_backend='onnx' never builds the ONNX segmenter",
    ),
    Mutation(
        "masks-ignore-instruction",
        "lens_ros/model/lens.py",
        "            out = self.segmenter.decode(emb, prompt_tokens=prompt_tokens[i : i + 1], boxes=box)\n",
        "            out = self.segmenter.decode(emb, prompt_tokens=torch.zeros_like(prompt_tokens[i : i + 1]))\n",
        (
            "test/training/test_tiny_bundle.py::test_bundle_masks_follow_the_instruction_on_fresh_heldout_scenes",
            "test/training/test_tiny_bundle.py::test_bundle_beats_twice_a_random_object_on_fresh_heldout_scenes",
        ),
        "masks no longer depend on the instruction (box dropped, prompt token zeroed)",
    ),
    Mutation(
        "instruction-ignored",
        "lens_ros/model/pipeline.py",
        "        expression = prompts.clean_instruction(instruction)\n",
        '        expression = prompts.clean_instruction("the cylinder")\n',
        ("test/ros/test_node_embedded_model.py",),
        "Pipeline.segment ignores the instruction (always 'the cylinder')",
    ),
    Mutation(
        "prompt-parsed-as-answer",
        "lens_ros/model/pipeline.py",
        "        parsed = prompts.parse_answer(text)\n",
        "        parsed = prompts.parse_answer(expression + text)\n",
        ("test/reliability/test_bad_input_matrix.py::test_injected_instruction_never_reaches_the_answer_parser",),
        "the answer parser reads the instruction in front of the completion (an injected box wins)",
    ),
    # -- node -------------------------------------------------------------------------------
    Mutation(
        "error-keeps-stale-track-state",
        "lens_ros/node.py",
        "self._track_state, self._state_version = None, -1  # reason afresh next frame",
        "self._state_version = version  # the failed instruction tracks the previous state",
        ("test/reliability/test_faults.py::test_node_reports_out_of_memory_and_recovers",),
        "after a model error the new instruction is tracked with the previous instruction's state",
    ),
    Mutation(
        "leak-32k-per-answer",
        "lens_ros/node.py",
        '        self.stats.event("published")\n',
        '        self.stats.event("published")\n        self.__dict__.setdefault("_leak", []).append(b"x" * 32768)\n',
        ("test/reliability/test_soak.py",),
        "the node keeps 32 KiB per published answer (~3 GB an hour at camera rate)",
    ),
    Mutation(
        "depth-no-points-unsaid",
        "lens_ros/node_outputs.py",
        'answer.depth_status, answer.depth_text = Segmentation.DEPTH_NO_POINTS, f"no pose: {exc}"',
        'answer.depth_text = f"no pose: {exc}"',
        ("test/reliability/test_bad_input_matrix.py::test_bad_depth_keeps_the_mask_and_says_why_there_is_no_pose",),
        "all-NaN depth under the mask leaves depth_status DEPTH_OK (no pose, nothing said)",
    ),
    Mutation(
        "depth-missing-info-as-missing-depth",
        "lens_ros/node_inputs.py",
        'return Segmentation.DEPTH_NO_CAMERA_INFO, "no camera_info received"',
        'return Segmentation.DEPTH_NO_DEPTH, "no camera_info received"',
        ("test/reliability/test_bad_input_matrix.py::test_depth_without_any_camera_info_says_so",),
        "depth without camera_info reported as missing depth",
    ),
    # -- every test module: its main behaviour broken once ----------------------------------
    Mutation(
        "bgr-not-swapped",
        "lens_ros/image_conversion.py",
        "        return np.ascontiguousarray(array[:, :, ::-1])\n",
        "        return np.ascontiguousarray(array)\n",
        ("test/test_image_conversion.py::test_to_rgb8_orders_channels",),
        "bgr8 frames are passed on as RGB without swapping channels",
    ),
    Mutation(
        "image-longer-data-accepted",
        "lens_ros/image_conversion.py",
        "    if buffer.size != step * height:\n",
        "    if buffer.size < step * height:\n",
        (
            "test/reliability/test_bad_input_matrix.py::test_bad_image_is_reported_counted_and_survived[data longer than step*height]",
        ),
        "an image with more data than step*height is not rejected",
    ),
    Mutation(
        "model-imports-ros",
        "lens_ros/regions.py",
        "from __future__ import annotations\n",
        "from __future__ import annotations\n\nimport rclpy  # noqa: F401\n",
        ("test/test_layering.py::test_layer_imports_only_what_is_below_it",),
        "a model-layer module imports rclpy",
    ),
    Mutation(
        "results-unnamed-machine",
        "bench/results_io.py",
        '    name = f"{machine_slug(desc)}-{stamp:%Y-%m-%d}"',
        '    name = f"results-{stamp:%Y-%m-%d}"',
        ("test/test_bench_results.py::test_results_files_name_the_machine_and_hold_every_row",),
        "results files no longer name the machine",
    ),
    Mutation(
        "dds-profile-overwritten",
        "lens_ros/ros_env.py",
        "    if not env.get(PROFILE_ENV):\n",
        "    if True:\n",
        ("test/test_ros_env.py::test_users_own_profile_is_kept",),
        "the user's own Fast DDS profile is replaced by the shipped one",
    ),
    Mutation(
        "chat-tokens-kept",
        "lens_ros/model/prompts.py",
        '    text = " ".join(_SPECIAL_PATTERN.sub(" ", text).split())\n',
        '    text = " ".join(text.split())\n',
        ("test/model/test_prompts.py::test_clean_instruction_strips_chat_tokens_and_bounds_length",),
        "chat-control tokens stay in the instruction (it can close the user turn)",
    ),
    Mutation(
        "degenerate-box-accepted",
        "lens_ros/model/prompts.py",
        "    if x2 <= x1 or y2 <= y1:\n",
        "    if False:\n",
        ("test/model/test_prompts.py::test_parse_malformed_answers_say_why",),
        "the parser returns boxes with x2 <= x1 or y2 <= y1",
    ),
    Mutation(
        "smart-resize-floors",
        "lens_ros/model/vision_input.py",
        "    h_bar = max(factor, round(height / factor) * factor)\n",
        "    h_bar = max(factor, height // factor * factor)\n",
        ("test/model/test_vision_input.py::test_smart_resize_matches_transformers",),
        "smart_resize floors the height instead of rounding it (not Qwen2-VL's rule)",
    ),
    Mutation(
        "sam-box-not-resized",
        "lens_ros/model/sam_backend.py",
        "        return self.transform.apply_boxes_torch(boxes.float(), original_size)\n",
        "        return boxes.float()\n",
        ("test/model/test_segmenters.py::test_sam_box_prompt_equals_sam_predictor",),
        "SAM box prompts are not scaled to the 1024 input",
    ),
    Mutation(
        "predict-bad-input-exit-0",
        "lens_ros/cli/predict.py",
        '        print(f"lens-predict: bad input: {exc}", file=sys.stderr)\n        return 2\n',
        '        print(f"lens-predict: bad input: {exc}", file=sys.stderr)\n        return 0\n',
        ("test/model/test_predict_cli.py::test_cli_bad_image_exit_code",),
        "lens-predict exits 0 on a bad image",
    ),
    Mutation(
        "unpickler-allows-code",
        "training/data/refer.py",
        '        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}: a refs file holds only plain data")\n',
        "        return super().find_class(module, name)\n",
        (
            "test/reliability/test_security.py::test_restricted_unpickler_refuses_code",
            "test/training/test_data_loaders.py::test_refs_pickle_with_code_is_refused",
        ),
        "the refs unpickler loads any global (code execution)",
    ),
    Mutation(
        "rle-row-major",
        "training/data/refer.py",
        "    return flat.reshape(w, h).T  # COCO RLE is column-major\n",
        "    return flat.reshape(h, w)\n",
        ("test/training/test_data_loaders.py::test_rle_uncompressed_counts_are_column_major",),
        "COCO RLE decoded row-major",
    ),
    Mutation(
        "slop-ignored",
        "lens_ros/frame_sync.py",
        "            if dt <= best_dt:\n",
        "            if True:\n",
        ("test/ros/test_frame_sync.py::test_nearest_stamp_within_slop",),
        "depth matching takes the last message whatever its stamp",
    ),
    Mutation(
        "ranges-unchecked",
        "lens_ros/node_config.py",
        '    if meta["low"] is not None and not (meta["low"] <= value <= meta["high"]):\n',
        "    if False:\n",
        ("test/ros/test_node_config.py::test_check_value_enforces_choices_and_ranges",),
        "parameter ranges are not enforced",
    ),
    Mutation(
        "intrinsics-not-scaled",
        "lens_ros/geometry.py",
        "        k[0] *= w / iw\n",
        "        k[0] *= 1.0\n",
        ("test/ros/test_geometry.py::test_intrinsics_follow_a_resized_image_and_reject_zero_focal",),
        "camera_info of another size: fx, cx not scaled to the image",
    ),
    Mutation(
        "always-reason",
        "lens_ros/node.py",
        '        return "track" if self.config.track else None\n',
        '        return "reason"\n',
        ("test/ros/test_node_behaviour.py::test_tracking_publishes_later_frames_without_reasoning_again",),
        "every frame is reasoned again (no tracking)",
    ),
    Mutation(
        "ciou-not-cumulative",
        "training/metrics.py",
        "self.intersection += inter",
        "self.intersection = inter",
        ("test/training/test_metrics.py::test_giou_is_mean_of_ious_ciou_is_cumulative",),
        "cIoU keeps only the last sample's intersection",
    ),
    Mutation(
        "box-reward-not-squared",
        "training/rewards.py",
        "    return box_iou(parsed.box, gt_box) ** 2\n",
        "    return box_iou(parsed.box, gt_box)\n",
        ("test/training/test_rewards.py::test_box_reward_is_iou_squared",),
        "box reward IoU instead of IoU^2",
    ),
    Mutation(
        "grad-accum-unscaled",
        "training/loop.py",
        "scaler.scale(loss / cfg.grad_accum).backward()",
        "scaler.scale(loss).backward()",
        ("test/training/test_loop.py::test_accumulated_gradient_is_the_bigger_batch_gradient",),
        "accumulated micro-batch losses are not divided by grad_accum",
    ),
    Mutation(
        "eval-scored-against-itself",
        "training/evaluate.py",
        '            meter.update(pred["mask"], sample.mask, sample.ignore)\n',
        '            meter.update(pred["mask"], pred["mask"], sample.ignore)\n',
        ("test/training/test_evaluate.py::test_evaluate_dataset_against_hand_computed_masks",),
        "evaluation scores the prediction against itself, not the ground truth",
    ),
    Mutation(
        "cosine-flat",
        "training/runtime.py",
        "        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))\n",
        "        return 1.0\n",
        ("test/training/test_runtime.py::test_cosine_schedule_warms_up_then_decays",),
        "the learning rate never decays after warm-up",
    ),
    Mutation(
        "no-depth-test",
        "lens_ros/world/scene.py",
        "        closer = hit & (hits.depth < depth[y0:y1, x0:x1])\n",
        "        closer = hit\n",
        ("test/training/test_synthetic_world.py::test_occlusion_does_not_depend_on_the_drawing_order",),
        "the renderer paints objects in list order (no depth test between objects)",
    ),
    Mutation(
        "soft-numbers-inverted",
        "training/tiny/model.py",
        "    logits = -0.5 * ((grid",
        "    logits = 0.5 * ((grid",
        ("test/training/test_tiny_pretraining.py::test_soft_number_targets_peak_at_the_value",),
        "soft number targets peak away from the value",
    ),
    Mutation(
        "bundle-bad-json-untyped",
        "lens_ros/model/bundle.py",
        'raise ModelFileError(f"{cfg_path}: invalid JSON ({exc})") from exc',
        'raise ValueError(f"{cfg_path}: invalid JSON ({exc})") from exc',
        ("test/model/test_bundle.py::test_missing_and_corrupt_files_name_the_path",),
        "a bundle with a corrupt config.json raises a bare ValueError, not ModelFileError",
    ),
    Mutation(
        "answer-not-cut",
        "lens_ros/model/prompts.py",
        "        text = text[:MAX_ANSWER_CHARS]\n",
        "        text = text\n",
        ("test/reliability/test_fuzz_text.py::test_hostile_answers_stay_fast_and_bounded",),
        "an over-long MLLM answer is parsed whole (not cut to MAX_ANSWER_CHARS)",
    ),
    Mutation(
        "launch-unknown-argument-accepted",
        "lens_ros/launch_description.py",
        '        raise ValueError(f"unknown launch arguments {unknown}; known: {list(ARGUMENT_NAMES)}")\n',
        "        pass\n",
        ("test/ros/test_launch.py::test_unknown_launch_argument_is_refused",),
        "a misspelt launch argument is ignored",
    ),
    Mutation(
        "config-unknown-key-accepted",
        "training/config.py",
        '        raise KeyError(f"unknown {cls.__name__} keys {unknown}; known: {sorted(names)}")\n',
        "        values = {k: v for k, v in values.items() if k in names}\n",
        ("test/training/test_config.py::test_unknown_key_and_wrong_type_are_errors",),
        "an unknown training configuration key is silently dropped",
    ),
    Mutation(
        "bag-missing-topic-ignored",
        "lens_ros/bag_player.py",
        "        if missing:\n",
        "        if False:\n",
        ("test/ros/test_bag_player.py::test_missing_topic_is_a_clear_error",),
        "asking the bag player for a topic the bag lacks plays nothing, silently",
    ),
    Mutation(
        "lifecycle-keeps-model",
        "lens_ros/node.py",
        "        self._stop_worker()\n        self._unload_model()\n        return super().on_deactivate(state)\n",
        "        self._stop_worker()\n        return super().on_deactivate(state)\n",
        ("test/ros/test_node_inputs.py::test_lifecycle_node_loads_the_model_on_activate_and_frees_it_on_deactivate",),
        "a deactivated lifecycle node keeps its model loaded",
    ),
    Mutation(
        "lean-norm-eps",
        "lens_ros/model/fast_decode.py",
        "            return F.rms_norm(x, module.weight.shape, module.weight, module.variance_epsilon)\n",
        "            return F.rms_norm(x, module.weight.shape, module.weight, 1.0)\n",
        ("test/model/test_fast_decode.py::test_lean_step_equals_the_transformers_step",),
        "the lean decode step's RMSNorm uses another epsilon than the model's",
    ),
    Mutation(
        "conv-bias-random",
        "lens_ros/model/context_module.py",
        "        nn.init.zeros_(self.conv_1d.bias)\n",
        "        nn.init.normal_(self.conv_1d.bias)\n",
        ("test/model/test_loading.py::test_context_module_uses_official_names_and_shapes",),
        "the context module's Conv1d bias is not initialised to 0 as in LENS",
    ),
    Mutation(
        "queries-before-sequence",
        "lens_ros/model/lens.py",
        "m.image_grid_thw, mask_x)\n        hidden, _ = self.mllm.run_language_model(torch.cat([embeds, queries], 1)",
        "m.image_grid_thw, mask_x)\n        hidden, _ = self.mllm.run_language_model(torch.cat([queries, embeds], 1)",
        ("test/model/test_lens_model.py::test_queries_follow_the_completion_and_do_not_change_it",),
        "the context queries run in front of prompt + completion (the answer then attends to them)",
    ),
    Mutation(
        "roi-width-off-by-one",
        "lens_ros/messages.py",
        "RegionOfInterest(x_offset=x1, y_offset=y1, width=max(0, x2 - x1)",
        "RegionOfInterest(x_offset=x1, y_offset=y1, width=max(0, x2 - x1 + 1)",
        ("test/ros/test_node_behaviour.py::test_instruction_gives_segmentation_stamped_like_the_image",),
        "the published box is one pixel wider than the mask's",
    ),
    # -- console and the node's overlays --------------------------------------------------
    Mutation(
        "overlay-always-drawn",
        "lens_ros/node_outputs.py",
        "raw = self.overlay.get_subscription_count() > 0",
        "raw = True",
        ("test/ros/test_node_behaviour.py::test_overlays_are_drawn_for_subscribers_only_and_the_jpeg_twin_is_rate_capped",),
        "~/overlay drawn and published for every answer with nobody subscribed",
    ),
    Mutation(
        "overlay-jpeg-uncapped",
        "lens_ros/node_outputs.py",
        " and self._compressed_rate.take()",
        "",
        ("test/ros/test_node_behaviour.py::test_overlays_are_drawn_for_subscribers_only_and_the_jpeg_twin_is_rate_capped",),
        "~/overlay/compressed sent for every answer (no overlay_compressed_max_hz)",
    ),
    Mutation(
        "console-filter-drops-lost-object",
        "lens_ros/console/ros_bridge.py",
        'filter_expression="tracked = %0 OR status <> %1"',
        'filter_expression="tracked = %0 AND status <> %1"',
        ("test/console/test_console_bridge.py::test_every_event_is_shown_and_tracked_frames_at_status_hz",),
        "the console's DDS filter passes only reasoned answers that are not OK",
    ),
    Mutation(
        "rate-limit-every-fourth",
        "lens_ros/rate_limit.py",
        "self._due = max(self._due, now - self.period / 2) + self.period",
        "self._due = now + self.period",
        ("test/test_rate_limit.py::test_average_rate_is_the_cap_when_offered_more",),
        "the rate cap counts from the last event (30 Hz offered, 10 Hz cap: 7.5 Hz)",
    ),
    Mutation(
        "instruction-answer-timed-at-start",
        "lens_ros/node.py",
        'self.stats.latency("instruction_answer", (time.monotonic() - instruction.received) * 1000.0)',
        'self.stats.latency("instruction_answer", self.stats.percentiles("instruction_wait")[0] + 0.01)',
        ("test/ros/test_node_behaviour.py::test_diagnostics_split_a_new_instructions_latency",),
        "a new instruction's answer latency is its wait for the worker (the model's time left out)",
    ),
    Mutation(
        "compressed-format-bare",
        "lens_ros/image_conversion.py",
        'msg.format = f"rgb8; {fmt} compressed bgr8"',
        "msg.format = fmt",
        ("test/test_image_conversion.py::test_compressed_format_follows_image_transport",),
        "compressed images say only 'jpeg' / 'png', not image_transport's format string",
    ),
]


def scratch_copy(dest: Path) -> None:
    """Copy tracked + untracked-not-ignored files of the working tree to ``dest``."""
    listing = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode()
    for rel in filter(None, listing.split("\0")):
        src = ROOT / rel
        if not src.is_file():  # deleted in the working tree
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target, follow_symlinks=False)
    (dest / "lens_training").symlink_to("training", target_is_directory=True)


def run_tests(copy: Path, tests: tuple[str, ...], timeout: float) -> tuple[int, str]:
    env = {**os.environ, "PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1"}
    command = [str(ROOT / ".venv/bin/python"), "-m", "pytest", "-x", "-q", *tests]
    try:
        done = subprocess.run(command, cwd=copy, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return -1, "timed out"
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    return done.returncode, lines[-1] if lines else done.stderr[-300:]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="mutations to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--baseline", action="store_true", help="run each mutation's tests unmutated first")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per pytest run")
    parser.add_argument("--keep", action="store_true", help="keep the scratch copy")
    parser.add_argument("--test", action="append", help="only the tests whose id contains this (repeatable)")
    args = parser.parse_args()
    known = {m.name: m for m in MUTATIONS}
    if args.list:
        for m in MUTATIONS:
            print(f"{m.name:32s} {m.path}: {m.what}")
        return 0
    unknown = [n for n in args.names if n not in known]
    if unknown:
        parser.error(f"unknown mutations {unknown}; --list shows them")
    chosen = [known[n] for n in args.names] if args.names else MUTATIONS

    copy = Path(tempfile.mkdtemp(prefix="lens_mutations_"))
    scratch_copy(copy)
    print(f"scratch copy: {copy}", flush=True)
    survived = 0
    try:
        for m in chosen:
            path = copy / m.path
            original = path.read_text()
            count = original.count(m.old)
            if count != 1:
                print(f"| {m.name} | {m.what} | STALE: the text occurs {count} times in {m.path} |", flush=True)
                survived += 1
                continue
            tests = [t for t in m.tests if not args.test or any(f in t for f in args.test)]
            if args.baseline:
                rc, tail = run_tests(copy, tuple(tests), args.timeout)
                if rc != 0:
                    print(f"| {m.name} | {m.what} | BASELINE FAILS: {tail} |", flush=True)
                    survived += 1
                    continue
            path.write_text(original.replace(m.old, m.new))
            try:
                for test in tests:
                    start = time.monotonic()
                    rc, tail = run_tests(copy, (test,), args.timeout)
                    verdict = "caught" if rc != 0 else "SURVIVED"
                    survived += rc == 0
                    print(f"| `{test}` | {m.name}: {m.what} | {verdict} ({tail}; {time.monotonic() - start:.0f} s) |")
                    sys.stdout.flush()
            finally:
                path.write_text(original)
    finally:
        if not args.keep:
            shutil.rmtree(copy, ignore_errors=True)
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
