"""The LENS model, ROS-free: MLLM wrapper, context module, segmenters and the Pipeline.

Nothing under ``lens_ros.model`` imports rclpy; scripts, tests, training and the
benchmarks use it directly, and the ROS node is a thin adapter around ``Pipeline``.

Entry points (imported from their modules; this package imports nothing heavy):
    pipeline.Pipeline.from_pretrained(model, device, dtype, segmenter_backend) -> segment / track
    presets.load_model(spec, model_dir=..., device=..., dtype=...) -> LensModel
    lens.LensModel(config, tokenizer): prepare(...) -> forward(...) (training), generation + queries
    bundle.save_bundle / load_bundle; lens_release.load_lens_release; tiny.build_tiny_random_bundle
    prompts.render_chat / parse_answer; vision_input.pack_image / smart_resize
"""
