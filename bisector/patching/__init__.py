"""Kept fixes as unified diffs of the user's own files, and applying them safely.

One concept a module:

- ``diff``: a Patch (a file's text before and after) and its git-style diff; several source edits
  of one file merged;
- ``settings``: the export and runtime settings gathered from kept fixes, the default exporter,
  and which input axes vary;
- ``cst_edits``: the libcst building blocks the script transformers share;
- ``export_script``: the ``torch.onnx.export`` call's keyword arguments and an onnxsim step
  (``--export-script``), and reading them back;
- ``flow``: which model a call in a script serves, from the code's data flow (a path expression's
  parts: ``path_parts``; the settings a table holds for a model: ``table_values``);
- ``sites`` and ``serving``: the session that loads a model's ``.onnx`` in a serving script, and
  that model's ONNX Runtime settings in a per-model table there, written and read back;
- ``infer_script``: the inference script (``--infer-script``): the serving table, and input
  padding and the bounds guard around the session's runs;
- ``script_helpers``: the functions bisector copies into user scripts (``inspect.getsource``),
  which the probe calls too;
- ``new_file``: ``export_onnx.py`` with the recommended settings when no script is given;
- ``apply``: the project root, and writing patches atomically with backups;
- ``from_report``: a fix report's chosen fixes as patches, several models' edits of one file
  composed into one patch.

Every transform is idempotent per setting (a second run adds what is missing and nothing else;
no file-wide marker), and a patch whose text does not change has the diff "". Nothing here is
imported eagerly: the probe imports ``settings`` and ``script_helpers`` without libcst.
"""
