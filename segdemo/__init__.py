"""segdemo: learn, try and annotate U-Net-family image segmentation.

The package is layered: a module imports only from layers below its own (and from inside its own
package), so there is no import circle and each layer can be read knowing only those below it.
Only :mod:`segdemo.ui` imports gradio. ``tests/test_layers.py`` checks both from the real imports.

==============  ===========================================================================
layer           modules (top to bottom)
==============  ===========================================================================
app             ``ui``: the Gradio app, one module per tab, thin over everything below
commands        ``train``, ``predict``, ``evaluate``, ``export``: the command lines
sharing         ``sharing``: share codes and the teacher's publications (public mode)
workspaces      ``workspaces``: each visitor's data folder, models and datasets (public mode)
services        ``catalog`` (pickable models), ``engine`` (training), ``annotations`` (the
                dataset store), ``datafolder`` (where the app keeps its files)
inference       ``inference``: checkpoints → ready-to-predict ``Segmenter`` objects; ``features``:
                a model's feature maps at every stage, drawn as a U; ``uncertainty``: where a
                prediction is unsure, and which images to label next; ``classical``: methods that
                learn nothing (Frangi's vesselness, GrabCut), predicting as a ``Segmenter`` does
formats         ``checkpoints`` (the file format), ``data`` (the data sources)
building blocks ``models``, ``losses``, ``metrics``, ``viz``, ``painting``, ``animation`` (GIFs),
                ``assist`` (a box, clicks or a flood fill turned into a mask, without a model; the class lock)
predictor       ``predictor``: what every pickable model offers, learned or not (its cost, its answer)
prediction      ``prediction``: one model's answer for one image, what viz and metrics take
labels          ``labels``: probabilities, targets and label maps turned into each other;
                ``loss_names``: the losses' names and the tasks each suits (no torch);
                ``mask_doctor``: a dataset's mask files checked (and fixed) against its classes
foundation      ``tasks``, ``runtime`` (normalization, device, precision), ``image_files``,
                ``files``, ``filenames``, ``limits`` (what one request or run may ask for),
                ``domain`` (what an image is, measured; what each model knows)
errors          ``errors``: the errors a user should read
==============  ===========================================================================
"""

__version__ = "0.1.0"

# The layering above, as data (top first): read by tests/test_layers.py.
LAYERS = (
    ("ui",),
    ("train", "predict", "evaluate", "export"),
    ("sharing",),
    ("workspaces",),
    ("catalog", "engine", "annotations", "datafolder"),
    ("inference", "features", "uncertainty", "classical"),
    ("checkpoints", "data"),
    ("models", "losses", "metrics", "viz", "painting", "animation", "assist"),
    ("predictor",),
    ("prediction",),
    ("labels", "loss_names", "mask_doctor"),
    ("tasks", "runtime", "image_files", "files", "filenames", "limits", "domain"),
    ("errors",),
)
