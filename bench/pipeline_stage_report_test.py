#!/usr/bin/python3
"""pipeline_stage_report.py's suggested split (`serve --pipeline-split`), on the stage times the
PP2 llama-70b run measured on two H200s (docs/perf.md: layers 0-44 and 45-79 + LM head, 102.6 and
81.6 ms of compute per step) and on made-up ones, and the whole report on two metric scrapes."""
import os
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pipeline_stage_report as report  # noqa: E402


class SuggestSplitTest(unittest.TestCase):
    def test_measured_pp2_run_moves_five_layers_to_the_head_stage(self):
        split, predicted = report.suggest_split([102.6, 81.6], [45, 35])
        self.assertEqual(split, [40, 40])
        self.assertAlmostEqual(predicted[0], 91.2, places=6)  # 40 layers of 2.28 ms
        self.assertAlmostEqual(predicted[1], 93.0, places=6)  # 40 layers + the 1.8 ms head

    def test_counts_stay_positive_and_sum_to_the_layers(self):
        for compute, layers in (([1.0, 50.0], [3, 1]), ([9.0, 1.0, 1.0], [3, 3, 3]),
                                ([10.0, 10.0, 12.0], [10, 10, 10])):
            split, _ = report.suggest_split(compute, layers)
            self.assertEqual(sum(split), sum(layers))
            self.assertTrue(all(c >= 1 for c in split), split)

    def test_balanced_stages_keep_their_split(self):
        self.assertEqual(report.suggest_split([20.0, 21.0], [10, 10])[0], [10, 10])

    def test_report_prints_the_suggestion(self):
        with tempfile.TemporaryDirectory() as d:
            def write(name, count, c0, c1):
                path = os.path.join(d, name)
                with open(path, "w") as f:
                    for stage, c in ((0, c0), (1, c1)):
                        f.write(f'bitserve_pipeline_stage_compute_seconds_sum{{stage="{stage}"}} {c}\n')
                        f.write(f'bitserve_pipeline_stage_compute_seconds_count{{stage="{stage}"}} {count}\n')
                        f.write(f'bitserve_pipeline_stage_transfer_seconds_sum{{stage="{stage}"}} 0\n')
                        f.write(f'bitserve_pipeline_stage_transfer_seconds_count{{stage="{stage}"}} {count}\n')
                return path
            before, after = write("a.prom", 0, 0, 0), write("b.prom", 100, 10.26, 8.16)
            out = subprocess.run([sys.executable, report.__file__, before, after, "12", "--layers", "45,35"],
                                 capture_output=True, text=True, check=True).stdout
            self.assertIn("--pipeline-split 40,40", out)
            self.assertIn("102.60 -> 93.00 ms", out)


if __name__ == "__main__":
    unittest.main()
