"""Numbers the paper reports (read from the authors' plots and notebooks, see ``shared/PAPER.md``),
shown in the book beside ours. Values are approximate where the paper only plots them."""

METHOD_NAMES = {"random": "random real", "bptt": "BPTT", "dm": "DM", "gm": "GM", "mtt": "MTT"}

# CIFAR-10, IPC 10, ConvNet, the paper's "train on distilled" protocol (paper300)
ACCURACY_PAPER300 = {"bptt": 0.589, "dm": 0.427, "gm": 0.460, "mtt": 0.536, "random": 0.273}

# each set plus k real images per class (k = 0, 2, 10, 50, 250)
MIXING_KS = (0, 2, 10, 50, 250)
MIXING = {
    "bptt": (0.59, 0.54, 0.50, 0.50, 0.60), "mtt": (0.53, 0.49, 0.45, 0.50, 0.59), "gm": (0.45, 0.44, 0.42, 0.47, 0.59),
    "dm": (0.43, 0.40, 0.42, 0.48, 0.59), "random": (0.27, 0.29, 0.33, 0.45, 0.58),
}

# test accuracy of the real-trained models (recognition of distilled images: MTT, BPTT 0.91-1.00; DM 0.41-0.71; GM 0.36-0.68)
REAL_MODEL_TEST_ACCURACY = {"convnet": 0.81, "convnet-tiny": 0.68, "resnet18": 0.91, "resnet34": 0.93}

# peak agreement with (accuracy-matched subset models, early-stopped models)
AGREEMENT = {"bptt": (0.62, 0.66), "dm": (0.47, 0.575), "gm": (0.51, 0.585), "mtt": (0.57, 0.63)}

# Hessian trace at iteration 300 of real training (real data plateaus at about 2,000-2,200)
TRACE_AT_300 = {"bptt": 430, "mtt": 730, "dm": 2350, "gm": 2050, "real": 2100}
