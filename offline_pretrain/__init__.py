"""``./run.sh pretrain``: hours of training on all of a contestant's own images, written as a pretrained model
folder (``submission/models/NAME/``) that ``online`` starts from. Offline only: nothing here ships."""
