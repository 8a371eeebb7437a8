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

from ._baselines import (BaselineModel, RiseMasks, bilinear_matrix, detection_scores, masked_inputs, rise,
                         segmentation_scores, sidu, sidu_masks, sidu_weights, upsample, with_outputs)
from ._bandstudy import (BandStudy, ChannelMatch, ChannelPair, StudyFrame, activation_correlation, band_study,
                         channel_images, channel_weight_correlation, class_weight_correlation, final_layer_bias,
                         final_layer_weights, head_input, held_out_frames, match_by_correlation, match_channels,
                         most_correlated_channels, pearson_matrix, penultimate_activations, plot_channel_images,
                         plot_channel_weights, plot_class_accuracy, plot_weight_correlation, weight_correlation,
                         write_plots)
from ._batching import BatchedModel, hard_coded_batch, rebatch
from ._conservativeness import conservativeness_table, residual_maps
from ._perturbation import (Curve, PerturbationConfig, auc, baseline_image, deletion, detection_score, insertion,
                            perturbed_batch, segmentation_insertion_deletion, segmentation_score)
from ._randomisation import cascading, independent, layer_labels, parameter_layers, randomise
from ._similarity import compare_maps, spearman, ssim, unit_range

__all__ = ["BandStudy", "ChannelMatch", "ChannelPair", "StudyFrame", "activation_correlation", "band_study",
           "channel_images", "channel_weight_correlation", "class_weight_correlation", "final_layer_bias",
           "final_layer_weights", "head_input", "held_out_frames", "match_by_correlation", "match_channels",
           "most_correlated_channels", "pearson_matrix", "penultimate_activations", "plot_channel_images",
           "plot_channel_weights", "plot_class_accuracy", "plot_weight_correlation", "weight_correlation",
           "write_plots", "BaselineModel", "RiseMasks", "bilinear_matrix", "detection_scores", "masked_inputs", "rise",
           "segmentation_scores", "sidu", "sidu_masks", "sidu_weights", "upsample", "with_outputs",
           "BatchedModel", "Curve", "PerturbationConfig", "auc", "baseline_image", "cascading", "compare_maps",
           "conservativeness_table", "deletion", "detection_score", "hard_coded_batch", "independent",
           "insertion", "layer_labels", "parameter_layers", "perturbed_batch", "randomise", "rebatch",
           "residual_maps", "segmentation_insertion_deletion", "segmentation_score", "spearman", "ssim",
           "unit_range"]
