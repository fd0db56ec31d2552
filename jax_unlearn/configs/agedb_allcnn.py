"""AgeDB age regression with AllCNN, forgetting ages <= 30 (the paper's main vision experiment).

The paper's profile: every setting below is the published notebook's
(AgeDB_AllCNN_0to30_forgetting.ipynb with utils.py, unlearn.py and metrics.py), set here even
where it equals the library's default, so the profile stays the paper's when a default moves.
`jax_unlearn.published.rows_for("agedb_allcnn")` holds the paper's numbers.

Published settings this profile cannot set yet (the library has no switch for them):
  - images normalised to [-1, 1] (Normalize(0.5, 0.5)), not standardised per channel.
  - errors averaged over batches of 256 (a short last batch weighs as a full one), not samples.
  - the Wasserstein distance read on the forget training rows through the train transform
    (augmented), and AIN relearning on augmented training rows.

AgeDB must be downloaded by hand (see README, "Real datasets"); then:

  jax-unlearn run --config agedb_allcnn \
      --config.data.kwargs.path=/data/agedb --workdir runs/agedb_allcnn
"""
from jax_unlearn import published
from jax_unlearn.configs import base_config

MODEL = "allcnn"
# The published AllCNN returns its 8 conv blocks' outputs; the blindspot loss compares those.
ALLCNN_BLOCKS = tuple(f"block{i}" for i in range(1, 9))


def get_config(model: str = MODEL):
  c = base_config()
  c.experiment = f"agedb_{model}"
  c.data.name = "agedb"
  c.data.kwargs.path = ""
  c.data.kwargs.image_size = 32  # AgeDB(img_size=32)
  # The train transform: RandomCrop(32, padding=16) of black pixels, RandomHorizontalFlip.
  c.data.augment = "published"
  c.forget.kind = "label_range"
  c.forget.high = 30.0  # age <= 30
  c.forget.include_high = True
  c.model.name = model
  c.model.kwargs.width = 1.0  # AllCNN(filters_percentage=1.), no dropout
  c.model.init = "torch"  # PyTorch's default initialisation of the published modules
  if model in ("resnet18", "mobilenet"):  # torchvision's stem and head, as published
    c.model.kwargs.variant = "torchvision"

  # fit_one_cycle: Adam lr 0.01, 100 epochs, batches of 256, ReduceLROnPlateau(factor 0.1,
  # patience 10) on the validation loss; the best epoch is saved and loaded for the original and
  # the retrained (gold) model.
  c.train.update(published.TRAIN_RECIPE)

  # Finetune: fit_one_cycle(5 epochs, lr 0.001) on the retain rows; the model is evaluated as it
  # ends (the best epoch is saved but not loaded).
  c.methods.finetune.epochs = 5
  c.methods.finetune.lr = 1e-3
  c.methods.finetune.keep_best = False
  # Gaussian-Amnesiac: 1 epoch, lr 0.001, forget ages drawn from N(mean, sd) of all train ages.
  c.methods.gaussian.epochs = 1
  c.methods.gaussian.lr = 1e-3
  c.methods.gaussian.keep_best = False
  # Blindspot: the blindspot model is fit_one_cycle(2 epochs, lr 0.01) on the retain rows, used
  # as it ends; the unlearning is fit_one_forget_cycle(1 epoch, lr 0.001, AT_beta 50), kept as
  # it ends. Its attention maps are torch's x.pow(2).mean(1) (the "reference" rule).
  b = c.methods.blindspot
  b.blindspot_epochs = 2
  b.blindspot_lr = 0.01
  b.blindspot_keep_best = False
  b.epochs = 1
  b.lr = 1e-3
  b.keep_best = False
  b.beta = 50.0
  b.attention = "reference"
  if model == MODEL:
    b.layers = ALLCNN_BLOCKS

  # MIA: 2,000 training rows of any cohort (members, through the train transform) against 2,000
  # test rows, the SVM fitted on all of them (nothing held out), judging 2,000 sampled forget
  # rows (through the train transform too).
  c.metrics.mia_members = "train"
  c.metrics.mia_samples = 2000
  c.metrics.mia_target_samples = 2000
  c.metrics.mia_holdout = 0.0
  # AIN: ain(..., batch_size=256, error_range=0.05, lr=0.01), relearning on the whole training
  # set for at most 10 epochs, checked after every step.
  c.metrics.ain_lr = 0.01
  c.metrics.ain_batch_size = 256
  c.metrics.ain_alpha = 0.05
  c.metrics.ain_max_epochs = 10
  c.metrics.ain_check_every = 1
  return c
