"""Package data: the embedded FashionMNIST sample (see ``fashion_mnist_sample/README.md``)."""
