# Types of the names cxrtriage/__init__.py imports lazily (PEP 562 __getattr__).
# A stub instead of `if TYPE_CHECKING:` imports, so the root package does not appear to import the
# upper layers (import-linter); tests/test_api.py checks that it names exactly cxrtriage.__all__.
from cxrtriage.api import Model as Model
from cxrtriage.api import evaluate as evaluate
from cxrtriage.api import list_models as list_models
from cxrtriage.api import load_model as load_model
from cxrtriage.data.dataset import ImageDataset as ImageDataset
from cxrtriage.data.discover import DatasetError as DatasetError
from cxrtriage.data.io import ImageReadError as ImageReadError
from cxrtriage.data.io import read_image as read_image
from cxrtriage.inference.predictor import Prediction as Prediction
from cxrtriage.metrics.report import MetricReport as MetricReport
from cxrtriage.models.bundle import ModelBundle as ModelBundle
from cxrtriage.models.bundle import ModelLoadError as ModelLoadError
from cxrtriage.segment.runtime import segment_lungs as segment_lungs

__version__: str
DISCLAIMER: str
__all__: list[str]
