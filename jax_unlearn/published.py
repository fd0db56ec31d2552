"""The paper's published numbers, by experiment name, so a report can set ours beside them.

`PUBLISHED[experiment]` holds the error the numbers are in ("mae" or "mse", as results.json's
"error"), a `source` line, and `rows`: model -> {"retain_test_error", "forget_test_error" and,
where published, "wasserstein_to_retrained"}, with the model names and metric keys of our
results. The rows are the paper's table (Tarun et al., "Deep Regression Unlearning", ICML 2023);
`notebook` keeps what the published notebooks print, at full precision, with the MIA and AIN
values the table does not give here. Where they came from:

  agedb_allcnn  AgeDB, AllCNN, forgetting ages 0-30; errors are MAE (years) on the test set.
                AgeDB_AllCNN_0to30_forgetting.ipynb prints every row: the errors (its cells
                12-33) round to the table's values, and so do its Wasserstein distances (cells
                60-64: scipy's wasserstein_distance between the model's and the retrained
                model's predictions on the forget training rows; 0 for the retrained model by
                definition). Its execution counts put those cells after the AIN cells (49-51),
                whose relearning trains the models in place, so the notebook's distances may be
                of relearned models. MIA (cells 44-48): the fraction of 2,000 forget rows the
                attack calls members; AIN (cells 49-51): relearn steps over the retrained
                model's.
  stsb_lstm     STS-B, LSTM over GloVe, forgetting pairs scored below 2; errors are MSE.
                STSB_LSTM_Unlearn_0_to_2.ipynb prints every error (cells 20-38) and they round
                to the table's values; it computes no Wasserstein distance, MIA or AIN. The
                blindspot model it distils from scores 0.943 / 6.871 (cells 34-35).

Both notebooks average per-batch errors over batches of 256 (a short last batch weighs as much
as a full one), where ours average over samples.
"""
import copy

ERROR_KEYS = ("retain_test_error", "forget_test_error", "wasserstein_to_retrained")

# utils.fit_one_cycle, which trains the original and the retrained model in both notebooks:
# Adam lr 0.01, 100 epochs, batches of 256, ReduceLROnPlateau(factor 0.1, patience 10) on the
# validation loss, the best epoch saved and loaded (as the library's `train.*` always does).
TRAIN_RECIPE = {"optimizer": "adam", "epochs": 100, "batch_size": 256, "lr": 0.01,
                "plateau_factor": 0.1, "plateau_patience": 10}

PUBLISHED = {
    "agedb_allcnn": {
        "error": "mae",
        "source": "Tarun et al., ICML 2023, AgeDB (AllCNN, ages 0-30); "
                  "AgeDB_AllCNN_0to30_forgetting.ipynb",
        "rows": {
            "original": {"retain_test_error": 9.33, "forget_test_error": 12.77,
                         "wasserstein_to_retrained": 2.99},
            "retrained": {"retain_test_error": 11.38, "forget_test_error": 24.31,
                          "wasserstein_to_retrained": 0.0},
            "finetune": {"retain_test_error": 9.79, "forget_test_error": 14.83,
                         "wasserstein_to_retrained": 1.62},
            "gaussian": {"retain_test_error": 9.81, "forget_test_error": 17.07,
                         "wasserstein_to_retrained": 2.33},
            "blindspot": {"retain_test_error": 9.98, "forget_test_error": 21.63,
                          "wasserstein_to_retrained": 1.15},
        },
        "notebook": {
            "original": {"retain_test_error": 9.332961082458496,
                         "forget_test_error": 12.767261505126953,
                         "wasserstein_to_retrained": 2.9925390871550235, "mia_forget": 0.5925},
            "retrained": {"retain_test_error": 11.382165908813477,
                          "forget_test_error": 24.306758880615234, "mia_forget": 0.3005},
            "finetune": {"retain_test_error": 9.79076862335205,
                         "forget_test_error": 14.829755783081055,
                         "wasserstein_to_retrained": 1.6193357016625907, "mia_forget": 0.4285,
                         "ain": 0.006578947368421052},
            "gaussian": {"retain_test_error": 9.813302993774414,
                         "forget_test_error": 17.067028045654297,
                         "wasserstein_to_retrained": 2.331370087042542, "mia_forget": 0.4965,
                         "ain": 0.009615384615384616},
            "blindspot": {"retain_test_error": 9.977169036865234,
                          "forget_test_error": 21.6317138671875,
                          "wasserstein_to_retrained": 1.1530339315163682, "mia_forget": 0.403,
                          "ain": 0.3333333333333333},
        },
    },
    "stsb_lstm": {
        "error": "mse",
        "source": "Tarun et al., ICML 2023, STS-B (LSTM, scores < 2); "
                  "STSB_LSTM_Unlearn_0_to_2.ipynb",
        "rows": {
            "original": {"retain_test_error": 2.84, "forget_test_error": 1.79},
            "retrained": {"retain_test_error": 0.93, "forget_test_error": 7.22},
            "finetune": {"retain_test_error": 1.07, "forget_test_error": 5.55},
            "gaussian": {"retain_test_error": 1.21, "forget_test_error": 4.82},
            "blindspot": {"retain_test_error": 0.98, "forget_test_error": 6.39},
        },
        "notebook": {
            "original": {"retain_test_error": 2.841952850846533,
                         "forget_test_error": 1.7932759574140893},
            "retrained": {"retain_test_error": 0.9258318761899855,
                          "forget_test_error": 7.221951234429545},
            "finetune": {"retain_test_error": 1.0722167293689073,
                         "forget_test_error": 5.554914107911729},
            "gaussian": {"retain_test_error": 1.2053828360775851,
                         "forget_test_error": 4.82110405608104},
            "blindspot": {"retain_test_error": 0.9808568328147851,
                          "forget_test_error": 6.394269830679027},
            "blindspot_model": {"retain_test_error": 0.9433637388558371,
                                "forget_test_error": 6.870501907695236},
        },
    },
}


def rows_for(experiment_name: str) -> dict | None:
  """The published entry of an experiment (a config's `experiment`): {"error", "source", "rows",
  "notebook"} as in `PUBLISHED`, a copy; None when the paper has no numbers for it."""
  entry = PUBLISHED.get(experiment_name)
  return copy.deepcopy(entry) if entry is not None else None
