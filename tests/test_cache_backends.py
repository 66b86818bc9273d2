"""``kdistill cache`` with a Keras or JAX teacher, and a student of another framework trained from
that store: the store is how any teacher teaches any student."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import by_role, read_report, set_args
from kdistill.store import StoreReader

FRAMEWORK = {"keras": "keras", "jax": "flax"}
TEACHER_FILE = {"keras": "teacher.keras", "jax": "teacher.safetensors"}


@pytest.mark.parametrize("teacher_backend, student_backend", [("keras", "torch"), ("jax", "torch")])
def test_a_foreign_teacher_cached_to_a_store_teaches_a_torch_student(tmp_path, kdistill, teacher_backend,
                                                                      student_backend):
    pytest.importorskip(FRAMEWORK[teacher_backend])
    pytest.importorskip(student_backend)
    code, _, err = kdistill("run", "--out", tmp_path / "teacher-run", *set_args(f"backend={teacher_backend}"))
    assert code == 0, err
    teacher_file = tmp_path / "teacher-run" / TEACHER_FILE[teacher_backend]
    code, _, err = kdistill("cache", "--store", tmp_path / "store",
                            *set_args(f"backend={teacher_backend}", f"teacher.path={teacher_file}"))
    assert code == 0, err
    store = StoreReader(tmp_path / "store")
    assert store.manifest.teacher["backend"] == teacher_backend
    teacher_report = by_role(read_report(tmp_path / "teacher-run"))["teacher"]
    stored_test = store.fetch(np.sort(store.ids))  # every split, the test split among them
    assert np.isfinite(stored_test).all()

    code, _, err = kdistill("run", "--out", tmp_path / "student", *set_args(
        f"backend={student_backend}", "teacher.model=null", f"teacher.store={tmp_path / 'store'}"))
    assert code == 0, err
    roles = by_role(read_report(tmp_path / "student"))
    # the store teacher's test accuracy is the foreign teacher's own, to float32 rounding of its logits
    assert roles["teacher"]["metrics"]["accuracy"] == pytest.approx(teacher_report["metrics"]["accuracy"], abs=1e-9)
    assert {"teacher", "distilled", "scratch"} == set(roles)
