"""The evaluation protocols' defaults, in a module light enough for the command line's help."""

# features: spatial maps are average-pooled to at most this many values (Goyal et al. 2019)
DEFAULT_POOL = 9216
# kNN: neighbours and the temperature of their weighted vote (Wu et al. 2018)
DEFAULT_K = 200
DEFAULT_TEMPERATURE = 0.1
# the input side of evaluation (FashionMNIST's 28 px and CIFAR's 32 px)
DEFAULT_SIZE = 32
