"""Explanation reliability: sanity checks, insertion/deletion and conservativeness (issue 9).

Runtime code (numpy, onnx, onnxruntime; scipy and scikit-image for the similarity
measures, the `reliability` extra); no torch. Public API (the modules behind it are private):

Similarity (Adebayo et al. 2018)
    spearman(a, b)                       rank correlation; constant maps: 1 if both, 0 if one
    ssim(a, b)                           SSIM of the maps each scaled to [0, 1] by its min/max
    compare_maps(trained, randomised)    both per method, means over rows (classes/boxes/frames)

Model-parameter randomisation (Adebayo et al. 2018), on the ONNX forward model
    parameter_layers(model)              Conv/ConvTranspose/Gemm/MatMul weights, output side last
    layer_labels(model)                  weight -> node name
    randomise(model, layers, seed)       copy with those weights and biases ~ N(0, std of the original)
    cascading(model, seed)               (label, model), top layer first, one more layer each step
    independent(model, seed)             (label, model), one layer at a time, top first
    (label randomisation retrains: hsi_xai_node.training.random_labels, needs torch)

Insertion and deletion (Petsiuk et al. 2018, as paper 001)
    deletion(model, x, saliency, score, config)     Curve; default baseline zeros
    insertion(model, x, saliency, score, config)    Curve; default baseline Gaussian blur (sigma 5)
    segmentation_score(logits, c, region, kind)     mean prob (default) or logit of c over region
    detection_score(pair, classes)                  scores[:, anchor, class] of one box
    segmentation_insertion_deletion(model, x, maps) AUCs per method and class of one frame
    PerturbationConfig, Curve, auc, baseline_image, perturbed_batch
    rebatch(model, n), BatchedModel      all steps in one engine call (loop if the batch is hard-coded)

RISE and SIDU (paper 001's offline baselines), batched on the engine, K targets per pass
    rise(model, x, score, n_masks, grid, p)          (K, H, W) RISE saliency (Petsiuk et al. 2018)
    sidu(model, x, score, layer)                     (K, H, W) SIDU saliency from a conv layer's masks
    segmentation_scores(classes, predicted)          score(outputs) -> (N, K): class probs over regions
    detection_scores(pairs)                          score(outputs) -> (N, K): box class scores at anchors
    BaselineModel, with_outputs, RiseMasks, sidu_masks, sidu_weights, masked_inputs, upsample

Band-count study (paper 000: 1-, 3- and 25-band models side by side)
    band_study(frames, model_paths, references=...)  BandStudy: per-class accuracy/IoU in sun and shade,
                                                     final-layer weight correlation (channels matched by
                                                     activations), most correlated channels as images
    final_layer_weights, penultimate_activations, match_channels, weight_correlation, write_plots, ...

The command `hsi-xai reliability` (report.py) runs all of it and writes index.html + report.json.

Conservativeness (paper 000)
    conservativeness_table(frames_outputs, graph)   max / median residual, conservative at 1e-4
    residual_maps(graph)                            the graph's maps at the logits' resolution
"""

# Names are imported on first use (like the package's top level), so `hsi-xai --help` and the light
# modules (config.py) do not pull in onnx, scipy or matplotlib.
from .._lazy import lazy_getattr

_EXPORTS = {
    "BaselineModel": "._baselines",
    "RiseMasks": "._baselines",
    "bilinear_matrix": "._baselines",
    "detection_scores": "._baselines",
    "masked_inputs": "._baselines",
    "rise": "._baselines",
    "segmentation_scores": "._baselines",
    "sidu": "._baselines",
    "sidu_masks": "._baselines",
    "sidu_weights": "._baselines",
    "upsample": "._baselines",
    "with_outputs": "._baselines",
    "BandStudy": "._bandstudy",
    "ChannelMatch": "._bandstudy",
    "ChannelPair": "._bandstudy",
    "StudyFrame": "._bandstudy",
    "activation_correlation": "._bandstudy",
    "band_study": "._bandstudy",
    "channel_images": "._bandstudy",
    "channel_weight_correlation": "._bandstudy",
    "class_weight_correlation": "._bandstudy",
    "final_layer_bias": "._bandstudy",
    "final_layer_weights": "._bandstudy",
    "head_input": "._bandstudy",
    "held_out_frames": "._bandstudy",
    "match_by_correlation": "._bandstudy",
    "match_channels": "._bandstudy",
    "most_correlated_channels": "._bandstudy",
    "pearson_matrix": "._bandstudy",
    "penultimate_activations": "._bandstudy",
    "plot_channel_images": "._bandstudy",
    "plot_channel_weights": "._bandstudy",
    "plot_class_accuracy": "._bandstudy",
    "plot_weight_correlation": "._bandstudy",
    "weight_correlation": "._bandstudy",
    "write_plots": "._bandstudy",
    "BatchedModel": "._batching",
    "hard_coded_batch": "._batching",
    "rebatch": "._batching",
    "conservativeness_table": "._conservativeness",
    "residual_maps": "._conservativeness",
    "Curve": "._perturbation",
    "PerturbationConfig": "._perturbation",
    "auc": "._perturbation",
    "baseline_image": "._perturbation",
    "deletion": "._perturbation",
    "detection_score": "._perturbation",
    "insertion": "._perturbation",
    "perturbed_batch": "._perturbation",
    "segmentation_insertion_deletion": "._perturbation",
    "segmentation_score": "._perturbation",
    "cascading": "._randomisation",
    "independent": "._randomisation",
    "layer_labels": "._randomisation",
    "parameter_layers": "._randomisation",
    "randomise": "._randomisation",
    "compare_maps": "._similarity",
    "spearman": "._similarity",
    "ssim": "._similarity",
    "unit_range": "._similarity",
}
__all__ = sorted(_EXPORTS)

__getattr__ = lazy_getattr(__name__, _EXPORTS)

