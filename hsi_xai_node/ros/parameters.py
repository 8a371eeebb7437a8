"""The node's ROS parameters: one per NodeConfig field, each with its description, its range where it has one
(`ros2 param describe` and rqt show them, and ROS refuses values outside them) and read-only where a change
needs a restart (transports.config.RESTART_PARAMETERS: the subscriptions and publishers are made from them)."""

from __future__ import annotations

import dataclasses

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

from ..transports.config import RESTART_PARAMETERS, NodeConfig, parameter_range

DESCRIPTIONS = {
    "raw_topic": "sensor_msgs/Image mono16 or 16UC1: the raw 5x5 snapshot mosaic",
    "dark_topic": "sensor_msgs/Image mono16: dark reference frame (transient local)",
    "white_topic": "sensor_msgs/Image mono16: white reference frame (transient local)",
    "multispectral_topics": "camera topics (sensor_msgs/Image: RGB/NIR/MIR/FIR) the detector may use; the node "
                            "subscribes to those of the cameras the detector needs",
    "multispectral_cameras": "rig camera name (rgb, nir, mir, fir) of each multispectral_topics entry, in order; "
                             "[] = each topic's first path segment (/rgb/image_raw -> rgb)",
    "sync_slop_s": "largest stamp difference, in seconds, between the detector's camera frames of one set",
    "output_namespace": "namespace of the output topics",
    "publish_class_maps": "also publish per-class float maps (32FC1), one topic per class",
    "model": "ONNX model path; empty = the bundled 25-band PN U-Net",
    "card": "model card path; empty = the model path with .json",
    "sensor_profile": "sensor profile name (hsi-drive, imec-665-975, imec-600-875) or imec XML path",
    "flip_vertical": "frames are read out upside down (XIMEA API convention for v0 calibration files)",
    "backend": "auto, tensorrt, ort-trt, ort-cuda, openvino or ort-cpu (auto measures those available here on the "
               "model and keeps the fastest, remembered per machine; /diagnostics says which and why)",
    "openvino_device": "device of the openvino backend: CPU, GPU, NPU or AUTO",
    "precision": "fp16 (TensorRT: the model's forward in FP16, the explanations and mask comparisons in FP32) "
                 "or fp32 (IEEE float32 throughout: TF32 off)",
    "engine_cache_dir": "TensorRT engine cache; empty = ~/.cache/hsi_xai_node/engines",
    "methods": "explanations computed in the graph: activation, seg_gradcam, seg_gradcam_signed, hires, gradcam_pp, "
               "xgradcam, layercam, seg_xres, eigencam, fem, scorecam (a forward per channel: offline-grade), "
               "spectral; input attributions (paper 003): gradient, input_x_gradient, guided_backprop, deconvnet, "
               "lrp_epsilon, lrp_epsilon_nobias, lrp_zplus, lrp_alpha2_beta1, lrp_gamma, lrp_epsilon_plus_flat, "
               "lrp_epsilon_gamma_box, lrp_deep_taylor, deeplift, smoothgrad and integrated_gradients (a forward and "
               "a backward per sample or step: offline-grade)",
    "explain_classes": "class names the fused overlays show (e.g. [road, vegetation]); [] = every class",
    "target_layers": "layers the Grad-CAM family targets: card roles (penultimate, bottleneck) or tensor names",
    "overlay_method": "the map fused into the explanation overlay (<ns>/gradcam_overlay): a CAM-family method or an "
                      "input attribution, one of methods",
    "fem_k": "fem: a channel's pixels at or above its mean plus fem_k standard deviations count as strong, 0..10",
    "lrp_epsilon": "the LRP epsilon rule's stabiliser (lrp_epsilon, lrp_epsilon_nobias, the composites' dense layers)",
    "lrp_gamma": "the LRP gamma rule's gamma (lrp_gamma, lrp_epsilon_gamma_box), 0..10",
    "smoothgrad_samples": "smoothgrad: noisy copies of the forward per frame, each with a backward for every class",
    "smoothgrad_noise": "smoothgrad: the noise's standard deviation as a share of the frame's input range, (0, 1]",
    "ig_steps": "integrated_gradients: intervals of the path (trapezoid: steps + 1 points, riemann_right: steps), "
                "each a copy of the forward with a backward for every class",
    "ig_quadrature": "integrated_gradients: trapezoid or riemann_right",
    "attribution_baseline": "integrated_gradients' and deeplift's reference input: zeros, blur (Gaussian, 5 px) or "
                            "spectral_mean (each pixel's mean over the bands in every band)",
    "overlay_alpha": "blend weight of the coloured map over the false-colour preview, 0..1",
    "colormap": "colormap of one-sided maps (Grad-CAM, per-box Grad-CAM), sequential: inferno, viridis, magma, hot, "
                "turbo or jet",
    "signed_colormap": "colormap of signed maps (activation, Grad-CAM without ReLU, HiRes), diverging and centred on "
                       "zero: coolwarm, rdbu, bwr or seismic",
    "overlay_scale": "what a colour means: card (fixed per class, from the model card), running (per class, follows "
                     "the drive) or frame (each frame's own peak)",
    "focus_class": "a class name: also publish <ns>/focus_overlay, that class's map over the whole window with its "
                   "region outlined; empty = none",
    "detector_model": "detector ONNX path; \"default\" = the bundled RGB+MIR EfficientDet; empty = detection off",
    "detector_card": "detector card path; empty = the detector path with .json",
    "rig_file": "camera rig YAML (camera sizes, encodings, homographies); empty = the generated drives' rig",
    "detection_score_threshold": "keep detections scoring above this, 0..1; 0.0 = the detector card's threshold",
    "explain_boxes": "top-K detections per frame explained by per-box Grad-CAM; 0 = none",
    "detection_methods": "per-box maps computed in the detector's graph: box_gradcam, box_gradcam_signed, box_hires, "
                         "box_gradcam_pp, box_xgradcam, box_layercam, box_xres, box_eigencam, box_fem; box_spectral adds each "
                         "detection's camera shares (gradient x input per camera); box_<input attribution> "
                         "(box_gradient, box_deeplift, box_lrp_epsilon, ...: any input attribution, per box)",
    "detection_overlay_method": "the per-box map the detection overlay shows: any per-box CAM method or input "
                                "attribution (box_gradient, box_deeplift, box_lrp_epsilon_plus_flat, ...)",
    "detection_layer": "the per-box CAMs' layer: box_level = each box at its own pyramid level (the feature its class "
                       "head scored it from); class_head_input (or another card role or tensor) = that layer for "
                       "every box",
    "memory_limit_mb": "largest estimated memory per frame (model tensors at batch = classes or boxes, camera frames "
                       "and warps) a model, detector or rig may need; more is refused at start with the estimate",
    "camera_transport": "raw: cameras as sensor_msgs/Image on their topics; compressed: sensor_msgs/CompressedImage "
                        "(JPEG or PNG, 16-bit PNG for thermal) on <topic>/compressed, image_transport's naming",
    "raw_transport": "raw: the mosaic as sensor_msgs/Image; compressed: as 16-bit PNG CompressedImage on "
                     "<raw_topic>/compressed (lossless only: JPEG would mix the mosaic's bands)",
    "max_input_age_s": "drop frames whose header stamp is older than this on arrival (counted on /diagnostics), for "
                       "a vehicle whose pipeline falls behind; 0.0 = keep every frame",
    "publish_foxglove_annotations": "also publish foxglove_msgs/ImageAnnotations (detection boxes and labels on the "
                                    "primary camera, class outlines on the HSI images); needs foxglove_msgs",
    "input_qos": "QoS of the camera subscriptions: sensor_data (best effort, default) or reliable",
    "output_qos": "QoS of the output publishers: reliable (default) or sensor_data",
}




def descriptor(name: str) -> ParameterDescriptor:
    """The descriptor of parameter `name`: description, range (ROS ranges are inclusive; an exclusive end, as
    memory_limit_mb > 0, is refused by the node's own check with the reason) and read-only flag."""
    d = ParameterDescriptor(description=DESCRIPTIONS[name], read_only=name in RESTART_PARAMETERS)
    bounds = parameter_range(name)
    if bounds is not None:
        kind, low, high, _ = bounds
        if kind is float:
            d.floating_point_range = [FloatingPointRange(from_value=float(low), to_value=float(high), step=0.0)]
        else:
            d.integer_range = [IntegerRange(from_value=int(low), to_value=int(high), step=1)]
    return d


def parameter_names() -> list[str]:
    return [f.name for f in dataclasses.fields(NodeConfig)]
