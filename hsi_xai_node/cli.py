"""`hsi-xai`: the command-line entry point (no ROS needed).

Every command and option is declared here, and nothing heavy is imported to do it (onnx,
OpenCV, torch and the bag libraries wait until a command runs), so `hsi-xai --help` is
instant. Each command's work lives in its module; `_lazy` names it and imports it on use.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .errors import InputError

BACKEND_HELP = ("engine backend: auto, tensorrt, ort-trt, ort-cuda, openvino or ort-cpu (auto measures those available "
                "here on the model and keeps the fastest, remembered per machine)")


class _Formatter(argparse.HelpFormatter):
    """Shows every option's default (unless its help already does)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.default is None or action.default is False \
                or action.default == argparse.SUPPRESS or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


class _lazy:
    """A command function named by module and attribute, imported only when the command runs."""

    def __init__(self, module: str, name: str):
        self.target = f"{module}:{name}"
        self._module, self._name = module, name

    def __call__(self, args) -> int:
        return getattr(importlib.import_module(self._module), self._name)(args)


def _profiles(sub) -> None:
    p = sub.add_parser("profiles", help="list the sensor profiles, or describe one", formatter_class=_Formatter,
                       description="List the built-in sensor profiles, or print the geometry and band table of one "
                                   "(a name or the path of an imec calibration XML).")
    p.add_argument("profile", nargs="?", help="profile name (hsi-drive, imec-665-975, imec-600-875) or imec XML path")
    p.add_argument("--flip-vertical", action="store_true",
                   help="frames are read out upside down (XIMEA API convention for v0 files)")
    p.set_defaults(func=_lazy("hsi_xai_node.cli", "cmd_profiles"))


def _demo(sub) -> None:
    from .demo_facts import demo_sizes_text
    from .drive_splits import DEMO_SEED

    d = sub.add_parser("demo", help="record a generated drive as a rosbag2, replay it, write a report",
                       formatter_class=_Formatter,
                       description="Record a generated drive (a seed no bundled model was trained or validated on) "
                                   "as a rosbag2, replay it through the node's pipeline and write the outputs and "
                                   "an HTML report. Measured for the default 25 frames (1 s of drive): "
                                   + demo_sizes_text() + ".")
    d.add_argument("--out", default="demo_out",
                   help="output directory (new, empty, or an earlier demo's; anything else is refused)")
    d.add_argument("--profile", default="hsi-drive", help="sensor profile name or imec XML")
    d.add_argument("--seed", type=int, default=DEMO_SEED,
                   help="drive seed; seeds a bundled model was trained or validated on are refused")
    d.add_argument("--allow-training-drive", action="store_true",
                   help="accept a seed the models were trained or validated on (every figure then says so)")
    d.add_argument("--frames", type=int, default=25, help="frames to record (25 = 1 s at 25 fps)")
    d.add_argument("--stride", type=int, default=1, help="record every N-th frame of the drive (1: camera rate)")
    d.add_argument("--sheet", type=int, default=6, help="frames shown in the report's contact sheet")
    d.add_argument("--backend", default="auto", help=BACKEND_HELP)
    d.add_argument("--copy-raw", action="store_true",
                   help="also copy the raw mosaic (4.4 MB a frame) into the output bag")
    d.add_argument("--no-progress", action="store_true", help="no progress bar")
    d.set_defaults(func=_lazy("hsi_xai_node.demo", "cmd_demo"))


def _replay(sub) -> None:
    r = sub.add_parser("replay", help="replay a rosbag2 through the pipeline into a new bag (no ROS needed)",
                       formatter_class=_Formatter,
                       description="Read a rosbag2 (MCAP or sqlite3), run the node's segmentation and detection "
                                   "pipelines on it and write an MCAP bag with the inputs and every output, under "
                                   "the input headers, with each topic's QoS recorded.")
    r.add_argument("input", metavar="IN", help="input rosbag2 (MCAP or sqlite3 directory, or one .mcap file)")
    r.add_argument("output", metavar="OUT", help="output rosbag2 directory (must not exist unless --overwrite)")
    r.add_argument("--config", help="node parameter file (default: the installed config/hsi_xai.yaml)")
    r.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap", help="output storage")
    r.add_argument("--backend", help="engine backend (default: the config's): auto, tensorrt, ort-trt, ort-cuda, "
                                     "openvino, ort-cpu")
    r.add_argument("--model", help="segmentation model ONNX with its card beside it, e.g. one `hsi-xai import-model` "
                                   "wrote (default: the config's)")
    r.add_argument("--methods", metavar="M1,M2,...", help="explanation methods (default: the config's)")
    r.add_argument("--overwrite", action="store_true",
                   help="replace an existing OUT, but only a rosbag2 directory or one this tool wrote")
    r.add_argument("--no-copy-raw", action="store_true",
                   help="leave the raw mosaic messages (4.4 MB each) out of OUT")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.set_defaults(func=_lazy("hsi_xai_node.transports.replay", "cmd_replay"))


def _bag_from_frames(sub) -> None:
    b = sub.add_parser("bag-from-frames", formatter_class=_Formatter,
                       help="make a rosbag2 from a folder of raw mosaic frames (.bin as HSI-Drive ships them) and "
                            "the dark and white references, for the replay, the fleet and the node",
                       description="Write the raw mosaic frames of a folder (sorted by name; .bin: raw little-endian "
                                   "uint16 of the whole sensor, no header; .npy: a 2-D uint16 array; .png: 16-bit "
                                   "single-channel) to a new rosbag2 on the node's raw topic, with the dark and white "
                                   "references (one frame file each, or a folder of them, averaged) on their latched "
                                   "topics, stamped from a file or a frame rate. A frame file of the wrong size is "
                                   "skipped and counted.")
    b.add_argument("frames", metavar="FRAMES", help="folder of raw frame files")
    b.add_argument("output", metavar="OUT", help="output rosbag2 directory (must not exist unless --overwrite)")
    b.add_argument("--dark", required=True, help="dark reference: a frame file, or a folder of them (averaged)")
    b.add_argument("--white", required=True, help="white reference: a frame file, or a folder of them (averaged)")
    b.add_argument("--fps", type=float, default=25.0, help="frame rate the stamps are spaced by (without --stamps)")
    b.add_argument("--start", type=float,
                   help="first stamp, seconds since the epoch (default: the first frame file's modification time)")
    b.add_argument("--stamps", help="text file with one stamp per frame file, in name order: integer ns, or "
                                    "seconds with a decimal point")
    b.add_argument("--pattern", default="*", help="glob of the frame files in FRAMES")
    b.add_argument("--profile", help="sensor profile that sizes the frames (default: the config's sensor_profile)")
    b.add_argument("--config", help="node parameter file whose topic names the bag uses (default: the installed one)")
    b.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap", help="output storage")
    b.add_argument("--overwrite", action="store_true",
                   help="replace an existing OUT, but only a rosbag2 directory or one this tool wrote")
    b.set_defaults(func=_lazy("hsi_xai_node.transports.frames_bag", "cmd_bag_from_frames"))


def _fleet(sub) -> None:
    f = sub.add_parser("fleet", help="replay every bag of a directory or manifest on Ray (local, or a cluster)",
                       formatter_class=_Formatter,
                       description="Replay every rosbag2 under IN (searched recursively) or listed in the manifest "
                                   "file IN through the pipeline, on Ray: local worker processes by default, an "
                                   "existing cluster with --address. Long bags are cut into time shards. Writes "
                                   "OUT/<bag> (the bag `hsi-xai replay` writes, plus summary.json) per bag, and "
                                   "OUT/fleet.json and OUT/index.html with the frames worth a look. Needs the "
                                   "[fleet] extra (ray).")
    f.add_argument("input", metavar="IN", help="directory of rosbag2 bags (MCAP or sqlite3), or a text manifest "
                                               "of bag paths (one per line, # comments)")
    f.add_argument("output", metavar="OUT", help="output directory (new, empty, or an earlier fleet run's)")
    f.add_argument("--config", help="node parameter file (default: the installed config/hsi_xai.yaml)")
    f.add_argument("--backend", help="engine backend (default: the config's): auto, tensorrt, ort-trt, ort-cuda, "
                                     "openvino, ort-cpu; GPU backends get one GPU per worker")
    f.add_argument("--workers", type=int, help="worker processes (default: one per CPU, or per GPU for GPU "
                                               "backends, of this machine or the cluster)")
    f.add_argument("--address", help="join this Ray cluster (e.g. auto, or ray://HEAD:10001) instead of starting "
                                     "a local one")
    f.add_argument("--shard-seconds", type=float, default=60.0,
                   help="cut bags into shards of this many seconds of recording; 0 = whole bags")
    f.add_argument("--resume", action="store_true",
                   help="continue an earlier run into OUT: keep shards made from the same bags, configuration "
                        "and models")
    f.add_argument("--overwrite", action="store_true", help="redo every shard of an earlier run into OUT")
    f.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap", help="output storage")
    f.add_argument("--no-copy-raw", action="store_true",
                   help="leave the raw mosaic messages (4.4 MB each) out of the output bags")
    f.add_argument("--no-progress", action="store_true", help="no progress bar")
    f.set_defaults(func=_lazy("hsi_xai_node.fleet._run", "cmd_fleet"))


def _training(sub) -> None:
    from .training.config import SIZES, DetectionTrainConfig, TrainConfig

    t = sub.add_parser("train-segmentation", formatter_class=_Formatter,
                       help="train, evaluate and export the segmentation U-Nets (needs the [train] extra: torch)")
    t.add_argument("--variants", default="1,3,25pn,25",
                   help="comma list of: 1 (731.88 nm), 3 (bands 9, 22, 25), 25pn (25 bands with PN), "
                        "25 (25 bands without PN, the control for PN)")
    t.add_argument("--size", choices=sorted(SIZES), default="bundled",
                   help="bundled: 12 base filters (~4.4 MB); hsi-drive: HSI-Drive's 32 (~31 MB); tiny: 4 (smoke tests)")
    t.add_argument("--bundle", default="1,3,25pn", help="variants to export as ONNX + card")
    t.add_argument("--out", default="models", help="output directory for models, cards and the study table")
    t.add_argument("--profile", default="hsi-drive", help="sensor profile the drives are rendered for")
    t.add_argument("--steps", type=int, default=TrainConfig.steps, help="training steps per variant")
    t.add_argument("--seed", type=int, default=0, help="random seed of initialisation and batches")
    t.add_argument("--threads", type=int, default=TrainConfig.threads, help="torch threads of the run")
    t.add_argument("--dataset", help="train on a labelled dataset's reflectance cubes instead of generated drives: "
                                     "HSI-Drive's folder (its training, validation and test splits)")
    t.add_argument("--layout", choices=("hsi-drive-mmseg", "hsi-drive-mat"),
                   help="the dataset's layout (default: recognised; .mat cubes in training/, validation/ and test/ "
                        "sub-folders)")
    _cube_options(t, "what the dataset's cubes hold; training needs reflectance (the variants normalise it), so "
                     "mmsegmentation-layout cubes must be declared reflectance explicitly")
    t.add_argument("--classes", choices=("hsi-drive", "hsi-drive-v2"),
                   help="the dataset's class set (default: hsi-drive-v2 for the mmsegmentation layout, hsi-drive "
                        "otherwise)")
    t.set_defaults(func=_lazy("hsi_xai_node.training.cli", "cmd_train_segmentation"))

    d = sub.add_parser("train-detection", formatter_class=_Formatter,
                       help="train, evaluate and export the multispectral EfficientDets, one per input stack "
                            "(needs the [train] extra: torch)")
    d.add_argument("--stacks", default="rgb+mir,rgb,nir,mir,fir",
                   help="comma list of camera stacks, cameras joined by + (paper 001's comparison)")
    d.add_argument("--bundle", default="rgb+mir", help="stacks to keep as ONNX + card")
    d.add_argument("--out", default="models", help="output directory for models, cards and the study table")
    d.add_argument("--steps", type=int, default=DetectionTrainConfig.steps, help="training steps per stack")
    d.add_argument("--seed", type=int, default=0, help="random seed of initialisation and batches")
    d.add_argument("--jobs", type=int, default=1,
                   help="stacks trained at a time, each in its own process (results do not depend on it)")
    d.add_argument("--threads", type=int, default=0,
                   help=f"torch threads per stack (0: {DetectionTrainConfig.threads} // jobs, at least 1; two 1-thread "
                        "runs side by side: 1.46x the steps/s of one 2-thread run on 2 cores, bench/train_threads.py)")
    d.add_argument("--cache", default="~/.cache/hsi_xai_node", help="where rendered datasets are cached ('' = none)")
    d.add_argument("--dataset", help="train on the Multispectral Object Detection dataset (its folder) instead of "
                                     "generated drives: registered frames of all four cameras, one stack at a time")
    d.add_argument("--splits", help="folder with train.txt, val.txt and test.txt (frame numbers; the dataset has no "
                                    "official split) (default: the dataset's folder)")
    d.add_argument("--images", default="ConvertedImages", help="the dataset's registered image folder")
    d.add_argument("--labels", help="the dataset's label folder (YOLO .txt or VOC .xml; default: labels/rgb, "
                                    "Annotations/rgb, labels or Annotations)")
    d.add_argument("--class-map", metavar="NAME0,NAME1,...",
                   help="YOLO class ids' names in id order (default: bike,car,car_stop,color_cone,person)")
    d.set_defaults(func=_lazy("hsi_xai_node.training.cli", "cmd_train_detection"))


NORMALISATION_CHOICES = ("pn", "none", "max", "mean_std")
CUBE_VALUES_HELP = ("what the cubes hold: reflectance (the card's normalisation and scale are applied, as the node "
                    "does) or the model's input values (taken as they are); default: model for the mmsegmentation "
                    "layout (its config feeds the cubes unchanged), reflectance otherwise")


def _cube_options(p, values_help: str = CUBE_VALUES_HELP) -> None:
    """--values and --mat-axes: how a segmentation dataset's cubes are read (datasets.VALUES, HsiDriveMat)."""
    p.add_argument("--values", choices=("reflectance", "model"), help=values_help)
    p.add_argument("--mat-axes", choices=("chw", "hwc"), default="chw",
                   help="axis order of the .mat cubes (the release's versions differ; the shape is checked)")  # model_card.NORMALISATIONS (a test holds them equal)


def _import_model(sub) -> None:
    p = sub.add_parser("import-model", formatter_class=_Formatter,
                       help="make a card for your own segmentation ONNX (mmsegmentation, segmentation_models_pytorch, "
                            "Keras/tf2onnx, torch) and check it runs with explanations",
                       description="Read a segmentation ONNX, find its input (NCHW or NHWC), its logits, the layer "
                                   "before the final convolution, the bottleneck and an early block; fix dynamic "
                                   "sizes, old opsets and channels-last layouts (writing NAME.onnx when the graph had "
                                   "to change); write the card NAME.json; then run the node's pipeline with "
                                   "explanations once on a generated frame. What a graph cannot say is asked here: "
                                   "the classes, the bands, the normalisation and the crop window.")
    p.add_argument("model", help="MODEL.onnx")
    p.add_argument("--task", choices=("segmentation", "detection"), default="segmentation",
                   help="what the model does")
    p.add_argument("--classes", required=True,
                   help="class names in logits-channel order (a,b,c), or a class set: hsi-drive (HSI-Drive's 5) or "
                        "hsi-drive-v2 (HSI-Drive v2.0's 10 labelled classes, 11 channels with 'unlabelled' first "
                        "as mmsegmentation trains them); for detection mods (the Multispectral Object Detection "
                        "dataset's bike, car, car_stop, color_cone, person)")
    p.add_argument("--bands", default="all",
                   help="input bands in channel order: 'all' (every band of --profile, in its order), a band set "
                        "(central, paper000-3) or wavelengths in nm (a,b,c)")
    p.add_argument("--profile", default="hsi-drive", help="sensor profile name or imec XML")
    p.add_argument("--normalise", choices=NORMALISATION_CHOICES, default="pn",
                   help="how reflectance became the model input in training: pn (per pixel, divided by the sum of "
                        "its bands), none, max (per band 2 x / max - 1 over the window, HSI-Drive's own pipeline), "
                        "mean_std (per band, --mean/--std)")
    p.add_argument("--mean", metavar="M1,M2,...", help="per-band means for --normalise mean_std")
    p.add_argument("--std", metavar="S1,S2,...", help="per-band standard deviations for --normalise mean_std")
    p.add_argument("--scale", type=float, default=1.0, help="the model input is scale x the normalised value")
    p.add_argument("--input-size", metavar="HxW", help="height x width to fix a dynamic input at (e.g. 208x400)")
    p.add_argument("--crop", metavar="TOP,LEFT", help="the model window's corner in the cube (default: centred)")
    p.add_argument("--layout", choices=("nchw", "nhwc"), help="the input's layout when its shape cannot tell")
    p.add_argument("--logits", metavar="TENSOR", help="the logits output when several outputs could be")
    p.add_argument("--penultimate", metavar="TENSOR", help="the layer to explain when no conv precedes the logits")
    p.add_argument("--stack", help="detection: the input's cameras in channel order as camera:encoding (bgr8, rgb8, "
                                   "mono8, mono16), e.g. rgb:bgr8,mir:mono16")
    p.add_argument("--stack-offset", metavar="O1,O2,...",
                   help="detection: per stacked channel (or one for all), input = (value - offset) / scale (default 0)")
    p.add_argument("--stack-scale", metavar="S1,S2,...",
                   help="detection: per stacked channel (or one for all) (default: the encoding's full scale, 255 or "
                        "65535)")
    p.add_argument("--anchors", metavar="ANCHORS.npy",
                   help="detection: (anchors, 4) in the coding's layout (copied beside the card)")
    p.add_argument("--coding", choices=("tf_yxhw_deltas", "cxcywh_deltas", "xyxy"), default="tf_yxhw_deltas",
                   help="detection: the regression's box coding (TensorRT/AutoML EfficientDet: tf_yxhw_deltas on "
                        "yxyx anchors; ours: cxcywh_deltas on xyxy anchors; xyxy: already boxes)")
    p.add_argument("--score-activation", choices=("sigmoid", "none"), default="sigmoid",
                   help="detection: what turns the class logits into scores")
    p.add_argument("--deltas", metavar="TENSOR", help="detection: the box regression output when several could be")
    p.add_argument("--class-head-input", metavar="TENSOR",
                   help="detection: the layer per-box maps explain, when the heads share no feature map")
    p.add_argument("--score-threshold", type=float, default=0.3, help="detection: the NMS score threshold")
    p.add_argument("--max-detections", type=int, default=20, help="detection: boxes kept per frame at most")
    p.add_argument("--name", help="card (and prepared model) name (default: the model's, + _static if changed)")
    p.add_argument("--out", help="folder to write into (default: the model's)")
    p.add_argument("--no-check", action="store_true", help="skip running the pipeline on a generated frame")
    p.set_defaults(func=_lazy("hsi_xai_node.model_import.cli", "cmd_import_model"))


def _evaluate(sub) -> None:
    p = sub.add_parser("evaluate", formatter_class=_Formatter,
                       help="per-class accuracy, IoU and the confusion matrix of a segmentation model on a labelled "
                            "dataset (HSI-Drive v2.0 as mmsegmentation or its release lays it out, or generated drives)",
                       description="Run a segmentation model as the node runs it (its card's bands, window, "
                                   "normalisation and scale) over a labelled dataset and print per-class accuracy and "
                                   "IoU, their means, the pixel accuracy and the confusion matrix, headed by the "
                                   "dataset, split and model they were measured on. Unlabelled ground truth (id 0) "
                                   "is not counted; a file that cannot be read is skipped and counted.")
    p.add_argument("model", help="MODEL.onnx with its card (e.g. one `hsi-xai import-model` wrote): a segmentation "
                                 "model, or a detector (per-class AP at the card's threshold)")
    p.add_argument("--dataset", required=True,
                   help="the dataset's folder (HSI-Drive v2.0: the folder holding images/ and annotations/, or a "
                        "folder of .mat cubes), or 'generated' for generated drives")
    p.add_argument("--layout", choices=("hsi-drive-mmseg", "hsi-drive-mat", "generated", "mods"),
                   help="the dataset's layout (default: recognised from the folder; mods for a detector)")
    p.add_argument("--images", default="ConvertedImages",
                   help="mods: the image folder (ConvertedImages: registered to 320x256, for stacks; Images: each "
                        "camera's own)")
    p.add_argument("--labels", help="mods: the folder of NNNNNN.txt (YOLO) or NNNNNN.xml (VOC) labels (default: "
                                    "labels/<first camera>, Annotations/<first camera>, labels or Annotations)")
    p.add_argument("--class-map", metavar="NAME0,NAME1,...",
                   help="mods: YOLO class ids' names in id order (default: bike,car,car_stop,color_cone,person)")
    p.add_argument("--split", default="test",
                   help="training, validation or test (mmsegmentation layout); for generated drives train, val, "
                        "test or seeds such as 2000-2005")
    _cube_options(p)
    p.add_argument("--profile", help="sensor profile whose band order the cubes are in (default: the card's)")
    p.add_argument("--limit", type=int, help="evaluate only the first N cubes (sorted by name)")
    p.add_argument("--backend", default="ort-cpu", help=BACKEND_HELP)
    p.add_argument("--threads", type=int, default=0, help="engine threads (0 = the engine's choice)")
    p.add_argument("--out", help="also write the figures, the confusion matrix and per-frame accuracy as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_lazy("hsi_xai_node.evaluate", "cmd_evaluate"))


def _build_engine(sub) -> None:
    p = sub.add_parser("build-engine", formatter_class=_Formatter,
                       help="build (or find) the cached TensorRT engine ahead of the first start",
                       description="Build the TensorRT engine the node will use, so its first start does not "
                                   "wait minutes. Runs on the machine that will run the engine, with TensorRT 10 "
                                   "and pycuda installed (JetPack, or the [gpu] extra). By default the graph is what "
                                   "the pipeline runs: MODEL.onnx plus the explain sub-graphs for --methods/--layers "
                                   "(the card MODEL.json must sit beside it); these must match the node's "
                                   "parameters, since another graph is another engine.")
    p.add_argument("model", help="MODEL.onnx")
    p.add_argument("--precision", choices=("fp16", "fp32"), default="fp16",
                   help="build precision: fp16 runs the model's forward in FP16 (the explanations, comparisons and "
                        "selections stay FP32); fp32 is IEEE float32 throughout (TF32 off)")
    p.add_argument("--cache-dir", help="engine cache (default: $XDG_CACHE_HOME or ~/.cache, /hsi_xai_node/engines)")
    p.add_argument("--methods", help="comma list of explanation methods (default: the pipeline's)")
    p.add_argument("--layers", help="comma list of card layer names (default: the pipeline's)")
    p.add_argument("--graph-only", action="store_true",
                   help="build MODEL.onnx exactly as it is, without the explain sub-graphs")
    p.set_defaults(func=_lazy("hsi_xai_node.cli", "cmd_build_engine"))


_RELIABILITY_OPTION = {"perturbation_steps": "steps"}  # ReportConfig field -> option name, where they differ


def _calibrate_overlays(sub) -> None:
    p = sub.add_parser("calibrate-overlays", formatter_class=_Formatter,
                       help="measure a model's overlay scales on its validation drives and write them into its card",
                       description="For every map the pipelines can overlay, the 99th percentile of its magnitude per "
                                   "class (over the class's predicted pixels, or a detector's kept boxes) on the "
                                   "validation drives the card lists; written into the card as overlay_scales, so "
                                   "overlay_scale card shows the same value in the same colour in every frame. The "
                                   "training commands run this when they export a model.")
    p.add_argument("model", help="MODEL.onnx (a segmentation U-Net or a detector, told apart by the card)")
    p.add_argument("--card", help="its card (default: MODEL.json)")
    p.add_argument("--frames-per-drive", type=int, help="frames per validation drive (default: the card's split)")
    p.add_argument("--dataset", help="measure on a labelled dataset's cubes instead of generated drives (a segmentation "
                                     "model: HSI-Drive v2.0's folder, as for `hsi-xai evaluate`)")
    p.add_argument("--layout", choices=("hsi-drive-mmseg", "hsi-drive-mat", "generated"),
                   help="the dataset's layout (default: recognised from the folder)")
    p.add_argument("--split", default="validation", help="the dataset split to measure on (never the test split "
                                                         "you report figures on)")
    _cube_options(p)
    p.add_argument("--limit", type=int, help="only the first N cubes of the dataset")
    p.add_argument("--backend", default="ort-cpu", help=BACKEND_HELP)
    p.set_defaults(func=_lazy("hsi_xai_node.overlay_calibration", "cmd_calibrate_overlays"))


def _reliability(sub) -> None:
    from .reliability.config import QUICK, ReportConfig

    d = ReportConfig()
    r = sub.add_parser("reliability", formatter_class=_Formatter,
                       help="evaluate the explanations: conservativeness, sanity checks, insertion/deletion with "
                            "RISE and SIDU, the band-count study, and which method to trust (paper 003's "
                            "localisation, faithfulness, robustness, randomisation and complexity measures against "
                            "the generated ground truth); writes an HTML report and JSON",
                       description="Evaluate the explanations on held-out generated drives (seeds 2000+). The "
                                   "full run takes minutes per frame on a 2-core CPU (RISE dominates); it prints "
                                   "an estimate first and a progress bar per section. --quick runs a small preset.")
    r.add_argument("--out", default="reliability_out", help="output directory (index.html, report.json)")
    r.add_argument("--model", default=d.model, help="segmentation U-Net (ONNX with its card)")
    r.add_argument("--detector", default=d.detector, help="detector ONNX with its card; '' = no detection sections")
    r.add_argument("--random-labels-model", help="a U-Net trained on permuted labels (label randomisation)")
    r.add_argument("--train-random-labels", type=int, default=0, metavar="STEPS",
                   help="train a U-Net on permuted labels for STEPS steps first and use it for label "
                        "randomisation (needs the [train] extra: torch); 0 = only a given --random-labels-model")
    r.add_argument("--random-labels-size", default="bundled", choices=("bundled", "tiny"),
                   help="size of the label-randomised U-Net")
    r.add_argument("--quick", action="store_true",
                   help="a small preset: " + ", ".join(f"--{_RELIABILITY_OPTION.get(k, k).replace('_', '-')} {v}"
                                                       for k, v in QUICK.items())
                        + " (options given explicitly still win)")
    r.add_argument("--frames", type=int, help=f"held-out frames (default {d.frames})")
    r.add_argument("--rise-masks", type=int, help=f"RISE masks per frame (default {d.rise_masks})")
    r.add_argument("--steps", type=int, help=f"insertion/deletion steps (default {d.perturbation_steps})")
    r.add_argument("--cascade-steps", type=int,
                   help=f"cascading-randomisation depths shown (default {d.cascade_steps})")
    r.add_argument("--input-methods", metavar="M1,M2,...",
                   help="paper 003's input attributions evaluated beside the CAM family (comma-separated: gradient, "
                        "input_x_gradient, guided_backprop, deconvnet, smoothgrad, integrated_gradients, deeplift, "
                        "lrp_epsilon, lrp_epsilon_nobias, lrp_zplus, lrp_alpha2_beta1, lrp_gamma, "
                        "lrp_epsilon_plus_flat, lrp_epsilon_gamma_box, lrp_deep_taylor; '' = none; default every "
                        "one)")
    r.add_argument("--smoothgrad-samples", type=int,
                   help=f"SmoothGrad's noisy samples (default {d.smoothgrad_samples})")
    r.add_argument("--ig-steps", type=int, help=f"integrated gradients' path intervals (default {d.ig_steps})")
    r.add_argument("--sensitivity-draws", type=int,
                   help=f"noisy copies of the first frame for max-sensitivity (default {d.sensitivity_draws})")
    r.add_argument("--sensitivity-noise", type=float,
                   help="max-sensitivity's uniform noise half-width, as a share of the frame's standard deviation "
                        f"(default {d.sensitivity_noise})")
    r.add_argument("--region-patch", type=int,
                   help=f"region perturbation's square side in pixels (default {d.region_patch}, Samek's)")
    r.add_argument("--backend", help=f"engine backend (default {d.backend}): " + BACKEND_HELP.split(": ", 1)[1])
    r.add_argument("--threads", type=int, default=0, help="engine threads (0 = ONNX Runtime's choice)")
    r.add_argument("--no-progress", action="store_true", help="no progress bars")
    r.set_defaults(func=_lazy("hsi_xai_node.reliability.cli", "cmd_reliability"))


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="hsi-xai", formatter_class=_Formatter,
        description="Explainable perception for imec snapshot-mosaic hyperspectral cameras, without ROS: the demo, "
                    "rosbag2 replay, training, TensorRT engine builds and the explanation-reliability report.",
        epilog="`hsi-xai COMMAND --help` describes a command and every option with its default.")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_profiles, _demo, _replay, _bag_from_frames, _fleet, _training, _import_model, _evaluate, _build_engine,
                _calibrate_overlays, _reliability):
        add(sub)
    return ap


# --- the two small commands that live here ------------------------------------------------------------
def cmd_profiles(args) -> int:
    from .sensor.calibration import load_profile, profile_names

    if not args.profile:
        for name in profile_names():
            p = load_profile(name)
            print(f"{name:14s} {p.n_bands} bands {p.band_wavelengths_nm.min():.0f}-"
                  f"{p.band_wavelengths_nm.max():.0f} nm, cube {p.cube_shape}, source {p.source}")
        return 0
    p = load_profile(args.profile, flip_vertical=args.flip_vertical)
    print(f"profile      {p.name} ({p.source})")
    print(f"sensor       {p.sensor_width}x{p.sensor_height}, {p.bit_depth} bit")
    print(f"filter area  {p.area_width}x{p.area_height} at ({p.offset_x}, {p.offset_y}), "
          f"pattern {p.pattern_width}x{p.pattern_height}")
    print(f"cube         {p.cube_shape} (bands, rows, cols) by sub-sampling")
    print(f"corrections  {[c.name for c in p.corrections] or 'none'}; "
          f"optics {[o.name for o in p.optics] or 'none'}")
    if p.notes:
        print(f"notes        {p.notes}")
    print("band  tile(r,c)  peaks nm (order, contribution)")
    for b in sorted(range(p.n_bands), key=lambda b: p.band_wavelengths_nm[b]):
        peaks = ", ".join(f"{pk.wavelength_nm:.2f} (o{pk.order}"
                          + (f", {pk.contribution:.2f}" if pk.contribution is not None else "") + ")"
                          for pk in p.peaks[b])
        print(f"{b:4d}  {str(p.band_position(b)):9s}  {peaks}")
    return 0


def cmd_build_engine(args) -> int:
    """Build the TensorRT engine of the pipeline's graph (or of MODEL.onnx as it is) into the cache."""
    from pathlib import Path

    from .runtime.engine import EngineError
    from .runtime.tensorrt_backend import TensorRTEngine

    path = Path(args.model)
    if not path.is_file():
        raise EngineError(f"no such model file: {path}")
    if args.graph_only:
        onnx_bytes = path.read_bytes()
    else:
        from .runtime.pipeline import PipelineConfig, pipeline_graph

        extra = {k: tuple(v.split(",")) for k, v in (("methods", args.methods), ("layers", args.layers)) if v}
        _, graph = pipeline_graph(PipelineConfig(model=str(path), **extra))
        onnx_bytes = graph.model.SerializeToString()
    try:
        engine = TensorRTEngine(onnx_bytes, precision=args.precision, cache_dir=args.cache_dir)
    except EngineError as exc:
        raise EngineError(f"{exc}. build-engine needs TensorRT 10 and pycuda on the machine that will run the "
                          "engine (JetPack on a Jetson, or pip install '.[gpu]'); the ONNX Runtime backends need "
                          "no engine build") from None
    print(f"engine {'built' if engine.built else 'found'}: {engine.cache_path}")
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except InputError as exc:  # bad input: one clear line, no traceback
        print(f"hsi-xai {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a path that cannot be read or written (a file in the way, no permission, a loop)
        where = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f)
        print(f"hsi-xai {args.command}: error: {where + ': ' if where else ''}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"hsi-xai {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
