"""The models and their configuration: the lecture's tree, the same parameters as dilated causal
convolutions, and the flat baseline.

Modules:
    config.py   ModelConfig (what a model is), TrainConfig (how it is trained), FlatConfig, the named
                recipes (RECIPES, recipe, recipe_model, recipe_teachers)
    blocks.py   Block, the one layer both forms share (pair mix, norm, activation, residual, skip);
                BatchNorm, SkipHead, WaveNetCore
    tree.py     TreeModel: the lecture's hierarchical model, the reference
    conv.py     ConvModel: the same parameters as kernel-2 dilated causal Conv1d layers over whole names
    flat.py     FlatModel: the lecture's flat MLP baseline
    lecture.py  from_lecture: a model built from the lecture's own from-scratch layers, as a TreeModel

Imports: the base only (errors, validate, device, data, version, paths). The one-way order,
base < models < inference < store < training < cluster < cli, is held by tests/test_layout.py.

Reading path: config.py (the fields of a model) -> blocks.py (one Block: the whole equivalence) ->
tree.py (the block on each FlattenConsecutive(2) pair) -> conv.py (the block at every position, as a
dilated Conv1d). A model changes form through ``WaveNetCore.from_model`` (blocks.py), which carries
BatchNorm's eps and momentum. flat.py and lecture.py stand on the side.
"""
