"""The shipped experiment configs, one module each with `get_config()`, run by name
(`jax-unlearn run --config demo`); they compose by import (`demo` starts from
`rotdigits_allcnn.get_config()`). `base` builds the config every experiment starts from.
"""
from jax_unlearn.configs.base import (base_config, member_seeds, method_entry, method_of,
                                      method_settings, method_variant, search_entries,
                                      set_methods, shrink_for_smoke, train_settings)

__all__ = ["base_config", "member_seeds", "method_entry", "method_of", "method_settings",
           "method_variant", "search_entries", "set_methods", "shrink_for_smoke",
           "train_settings"]
