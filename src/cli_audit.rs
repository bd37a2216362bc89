//! `triscope audit`: evaluation, explanation metrics, sanity checks and TCAV for one model
//! and one dataset split, written as a self-contained HTML report plus JSON and PNG figures.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::tensor::{Tensor, TensorData};

use crate::cli_attack::{
    EvalArgs, model_labels, open_eval_dataset, parse_fraction, progress_bar, run_evaluation,
    write_sweep_chart,
};
use triscope::audit::{
    AuditReport, ExplainAuditOptions, Figure, SampleAudit, SanityEntry, audit_sample, render_html,
    summarise,
};
use triscope::data::{Dataset, Label};
use triscope::eval::EvalReport;
use triscope::explain::faithfulness::FaithfulnessOptions;
use triscope::explain::sanity::{CASCADE, cascading_randomisation};
use triscope::explain::tcav::{
    TcavResult, adjust_for_multiple_tests, layer_activations, layer_gradients, tcav_test,
};
use triscope::explain::{
    AttributionOptions, Colormap, Method, TargetClass, attribute, overlay_rgb8,
};
use triscope::imaging::PixelImage;
use triscope::inference::Classifier;
use triscope::model::LayerId;
use triscope::plot::{
    LineChart, PALETTE, Series, Tile, render_bar_chart, render_confusion_matrix, render_image_grid,
    render_line_chart,
};
use triscope::regions::{LesionSizeSpec, Region, RegionSource, lesion_size_concepts};
use triscope::weights::write_atomic;

/// Options of `triscope audit`.
#[derive(clap::Args, Debug)]
pub struct AuditArgs {
    #[command(flatten)]
    pub eval: EvalArgs,
    /// Images the explanation metrics run on (the first N evaluated, classes interleaved;
    /// with box annotations, images that have a box of one of the model's classes first)
    #[arg(long, default_value_t = 21)]
    pub explain_samples: usize,
    /// Attribution method of the explanation metrics (gradcam, gradcam++, saliency, ...)
    #[arg(long, default_value = "gradcam")]
    pub method: String,
    /// Layer of the CAM methods
    #[arg(long, default_value = "layer4")]
    pub layer: String,
    /// L-inf radius of the stability attacks (default: --eps)
    #[arg(long)]
    pub stability_eps: Option<String>,
    /// Images of the model-randomisation sanity check
    #[arg(long, default_value_t = 2)]
    pub sanity_images: usize,
    /// Methods of the sanity check, comma-separated
    #[arg(long, default_value = "gradcam,saliency")]
    pub sanity_methods: String,
    /// TCAV concept as NAME=FOLDER (repeatable). Without one, a HAM10000 dataset gets
    /// lesion-size concepts built from its train-split masks
    #[arg(long, value_name = "NAME=FOLDER")]
    pub concept: Vec<String>,
    /// Folder of random images for TCAV with --concept (split into runs + 1 sets)
    #[arg(long, value_name = "FOLDER")]
    pub random: Option<PathBuf>,
    /// TCAV runs (random sets) per concept
    #[arg(long, default_value_t = 5)]
    pub tcav_runs: usize,
    /// Images per TCAV concept and per random set
    #[arg(long, default_value_t = 30)]
    pub tcav_images: usize,
    /// TCAV layers, comma-separated
    #[arg(long, default_value = "layer2,layer3")]
    pub tcav_layers: String,
    /// Skip TCAV
    #[arg(long)]
    pub no_tcav: bool,
}

pub fn audit(
    args: &AuditArgs,
    out: &Path,
    classifier: &Classifier,
    json: bool,
) -> Result<ExitCode> {
    let started = Instant::now();
    // Everything is parsed and checked before compute.
    let method: Method = args.method.parse()?;
    let layer: LayerId = args.layer.parse()?;
    let sanity_methods: Vec<Method> = args
        .sanity_methods
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<Method>())
        .collect::<triscope::Result<_>>()?;
    let tcav_layers: Vec<LayerId> = args
        .tcav_layers
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<LayerId>())
        .collect::<triscope::Result<_>>()?;
    let concepts = parse_concepts(&args.concept, args.random.as_deref())?;
    if args.tcav_runs < 2 && !args.no_tcav {
        bail!("--tcav-runs must be at least 2 (the t-test needs two runs)");
    }
    let (dataset, mut options) = open_eval_dataset(&args.eval)?;
    if options.eps_sweep.is_empty() {
        options.eps_sweep = [0.0, 1.0, 2.0, 4.0, 8.0]
            .iter()
            .map(|e| e / 255.0)
            .collect();
    }
    let stability_eps = match &args.stability_eps {
        Some(s) => parse_fraction(s)?,
        None => options.eps_linf,
    };
    if !(0.0..=1.0).contains(&stability_eps) {
        bail!("--stability-eps must be in [0, 1] pixel units, got {stability_eps}");
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let cfg = classifier.config().clone();
    let mut notes = Vec::new();

    // 1. Clean and robust evaluation (when the labels fit the model).
    let labels = match model_labels(&dataset, &cfg) {
        Ok(l) => Some(l),
        Err(e) => {
            notes.push(format!(
                "Evaluation skipped: {e:#}. The explanation metrics below use the model's own predictions."
            ));
            None
        }
    };
    let evaluation = match &labels {
        Some(l) => Some(run_evaluation(&dataset, l, &options, classifier)?),
        None => None,
    };

    // 2. Explanation metrics on a sample.
    let regions = RegionSource::for_dataset(&dataset)?;
    let (res, mode) = (cfg.resolution, classifier.resize_mode);
    let mut chosen: Vec<(usize, Vec<Region>)> = Vec::new();
    let mut without: Vec<usize> = Vec::new();
    for i in 0..dataset.len() {
        if chosen.len() >= args.explain_samples {
            break;
        }
        let mut r = match (&regions, dataset.samples[i].path()) {
            (Some(src), Some(path)) => src.regions(path, res, mode)?,
            _ => Vec::new(),
        };
        // A box of a finding the model does not know says nothing about its maps.
        if dataset.kind == triscope::data::DatasetKind::NihCxr14 {
            r.retain(|reg| {
                cfg.class_names
                    .iter()
                    .any(|c| c.eq_ignore_ascii_case(&reg.finding))
            });
        }
        if r.is_empty() {
            without.push(i);
        } else {
            chosen.push((i, r));
        }
    }
    for i in without {
        if chosen.len() >= args.explain_samples {
            break;
        }
        chosen.push((i, Vec::new()));
    }
    if regions.is_none() {
        notes.push(format!(
            "{} has no ground-truth regions (HAM10000 masks or NIH boxes): no localisation scores.",
            dataset.root.display()
        ));
    }
    let explain_options = ExplainAuditOptions {
        method,
        attribution: AttributionOptions {
            layer,
            ..AttributionOptions::default()
        },
        faithfulness: FaithfulnessOptions::default(),
        stability_eps,
        seed: args.eval.seed,
    };
    eprintln!(
        "explanation metrics ({method}, faithfulness, localisation, stability at {:.2}/255) on {} images",
        stability_eps * 255.0,
        chosen.len()
    );
    let bar = progress_bar(chosen.len(), "images explained");
    let mut samples: Vec<SampleAudit> = Vec::new();
    let mut images: Vec<PixelImage> = Vec::new();
    for (i, r) in &chosen {
        let image = dataset.load(*i, cfg.in_channels, res, mode)?;
        let s = &dataset.samples[*i];
        let true_label = describe_label(&dataset, &s.label);
        // The label in the model's class order (single-label) decides "correct".
        let true_class = match labels.as_ref().map(|l| &l[*i]) {
            Some(Label::Class(c)) => Some(*c),
            _ => None,
        };
        samples.push(audit_sample(
            classifier,
            &s.id,
            &image,
            &true_label,
            true_class,
            r,
            &explain_options,
        )?);
        images.push(image);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let method_layer = method.uses_layer().then_some(layer);
    let explanation = summarise(&samples, method, method_layer);

    // 3. Sanity check: cascading randomisation.
    let mut sanity = Vec::new();
    for (k, image) in images.iter().take(args.sanity_images).enumerate() {
        // The class the audit explained for this image (its prediction).
        let class = cfg
            .class_names
            .iter()
            .position(|c| *c == samples[k].explained_class)
            .unwrap_or_default();
        for &m in &sanity_methods {
            eprintln!("sanity check: {m} on {}", samples[k].id);
            let opts = AttributionOptions {
                layer,
                ..AttributionOptions::default()
            };
            let device = classifier.device().device.clone();
            let check = cascading_randomisation(
                classifier.model(),
                &device,
                args.eval.seed ^ 0xadeba70,
                image.height,
                image.width,
                0.5,
                &mut |model| {
                    let x = Tensor::<4>::from_data(
                        TensorData::new(
                            image.data.clone(),
                            [1, image.channels, image.height, image.width],
                        ),
                        &device,
                    );
                    Ok(attribute(model, x, m, TargetClass::Index(class), &opts)?
                        .into_iter()
                        .next()
                        .map(|a| a.map)
                        .unwrap_or_default())
                },
            )?;
            sanity.push(SanityEntry {
                method: m.name().to_string(),
                image: samples[k].id.clone(),
                check,
            });
        }
    }

    // 4. TCAV.
    let mut tcav = Vec::new();
    if !args.no_tcav {
        match concept_sets(args, &concepts, &dataset)? {
            Some(sets) => {
                notes.push(sets.origin.clone());
                if tcav_layers.contains(&LayerId::Layer4) {
                    notes.push(
                        "TCAV at layer4: the head is global average pooling then a linear layer, \
                         so the gradient of a logit with respect to layer4 is the same for every \
                         image and each CAV scores a class 0 or 1; read layer2 and layer3."
                            .into(),
                    );
                }
                tcav = run_tcav(
                    classifier,
                    &dataset,
                    labels.as_deref(),
                    &sets,
                    &tcav_layers,
                    args.eval.seed,
                )?;
            }
            None => notes.push(format!(
                "TCAV skipped: give --concept NAME=FOLDER and --random FOLDER \
                 (HAM10000 gets lesion-size concepts automatically); {} has neither.",
                dataset.root.display()
            )),
        }
    }

    // 5. Figures and the report.
    let mut figures = Vec::new();
    let mut warnings = Vec::new();
    if let Some(ev) = &evaluation {
        warnings.extend(ev.warnings.iter().cloned());
        figures.extend(evaluation_figures(ev, out)?);
    }
    figures.extend(explanation_figures(&samples, &sanity, &tcav, method, out)?);
    for c in sanity.iter().filter(|s| !s.check.passed) {
        warnings.push(format!(
            "Sanity check failed: {}'s map on {} stays similar (SSIM {:.2}) to the original after the whole network is randomised, so it does not reflect what the model learned.",
            c.method,
            c.image,
            c.check.steps.last().map(|s| s.ssim).unwrap_or(f64::NAN)
        ));
    }
    let report = AuditReport {
        model: classifier.source.to_string(),
        model_description: classifier.metadata.description.clone(),
        dataset: dataset.root.display().to_string(),
        split: dataset.split.clone(),
        device: classifier.device().description.clone(),
        created_unix_secs: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        evaluation,
        explanation,
        samples,
        sanity,
        tcav,
        figures,
        warnings,
        notes,
        elapsed_secs: started.elapsed().as_secs_f64(),
    };
    let text = serde_json::to_string_pretty(&report)?;
    let json_path = out.join("audit.json");
    // Written whole or not at all: a failed write leaves an earlier report intact.
    write_atomic(&json_path, text.as_bytes())?;
    let html_path = out.join("audit.html");
    write_atomic(&html_path, render_html(&report, out)?.as_bytes())?;
    if json {
        println!("{text}");
    } else {
        print_summary(&report);
        println!("wrote {}", html_path.display());
        println!("wrote {}", json_path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// The ground truth as text.
fn describe_label(dataset: &Dataset, label: &Label) -> String {
    match label {
        Label::Class(c) => dataset.class_names[*c].clone(),
        Label::Findings(f) => {
            let names: Vec<&str> = f
                .iter()
                .zip(&dataset.class_names)
                .filter(|(v, _)| **v > 0.5)
                .map(|(_, n)| n.as_str())
                .collect();
            if names.is_empty() {
                "No Finding".into()
            } else {
                names.join("|")
            }
        }
    }
}

type ConceptSets = Vec<(String, Vec<PathBuf>)>;

/// Concepts, `runs + 1` random sets, and where they came from (for the report).
struct TcavSets {
    concepts: ConceptSets,
    random_sets: Vec<Vec<PathBuf>>,
    origin: String,
}

fn parse_concepts(specs: &[String], random: Option<&Path>) -> Result<ConceptSets> {
    let mut out = Vec::new();
    for spec in specs {
        let Some((name, folder)) = spec.split_once('=') else {
            bail!("--concept '{spec}': use NAME=FOLDER");
        };
        let files = crate::cli_explain::list_images(Path::new(folder))
            .with_context(|| format!("--concept {name}: cannot list {folder}"))?;
        if files.len() < 2 {
            bail!(
                "--concept {name}: {folder} holds {} images, need at least 2",
                files.len()
            );
        }
        out.push((name.to_string(), files));
    }
    if !out.is_empty() && random.is_none() {
        bail!("--concept needs --random FOLDER (images that are not the concept)");
    }
    Ok(out)
}

/// The concept sets and `runs + 1` random sets, or `None` when there is nothing to test.
fn concept_sets(
    args: &AuditArgs,
    concepts: &ConceptSets,
    dataset: &Dataset,
) -> Result<Option<TcavSets>> {
    let runs = args.tcav_runs;
    if let Some(random) = &args.random {
        if concepts.is_empty() {
            bail!("--random needs at least one --concept NAME=FOLDER");
        }
        let files = crate::cli_explain::list_images(random)
            .with_context(|| format!("--random: cannot list {}", random.display()))?;
        let per = files.len() / (runs + 1);
        if per < 2 {
            bail!(
                "--random {}: {} images cannot make {} sets of at least 2",
                random.display(),
                files.len(),
                runs + 1
            );
        }
        let sets = files
            .chunks(per)
            .take(runs + 1)
            .map(|c| c.to_vec())
            .collect();
        return Ok(Some(TcavSets {
            concepts: concepts.clone(),
            random_sets: sets,
            origin: format!(
                "TCAV concepts from folders; random images from {}.",
                random.display()
            ),
        }));
    }
    if dataset.kind != triscope::data::DatasetKind::Ham10000 {
        return Ok(None);
    }
    let c = lesion_size_concepts(
        &dataset.root,
        &LesionSizeSpec {
            split: "train".into(),
            per_concept: args.tcav_images,
            random_sets: runs + 1,
            scan: 4000,
            large_fraction: 0.5,
            small_fraction: 0.1,
            seed: args.eval.seed,
        },
    )?;
    let origin = format!(
        "TCAV concepts from HAM10000 train-split masks ({} scanned): large_lesion = lesion \
         covers at least {:.0}% of the image, small_lesion = at most {:.0}%; random sets drawn \
         from the other train images ({} per set, {} runs).",
        c.scanned,
        c.large_fraction * 100.0,
        c.small_fraction * 100.0,
        args.tcav_images,
        runs
    );
    Ok(Some(TcavSets {
        concepts: vec![
            ("large_lesion".into(), c.large),
            ("small_lesion".into(), c.small),
        ],
        random_sets: c.random_sets,
        origin,
    }))
}

fn run_tcav(
    classifier: &Classifier,
    dataset: &Dataset,
    labels: Option<&[Label]>,
    sets: &TcavSets,
    layers: &[LayerId],
    seed: u64,
) -> Result<Vec<TcavResult>> {
    let (concepts, random_sets) = (&sets.concepts, &sets.random_sets);
    let cfg = classifier.config();
    let device = classifier.device().device.clone();
    let load_all = |paths: &[PathBuf]| -> Result<Vec<PixelImage>> {
        paths
            .iter()
            .map(|p| Ok(classifier.load_image(p)?.pixels))
            .collect()
    };
    let concept_images: Vec<(String, Vec<PixelImage>)> = concepts
        .iter()
        .map(|(n, p)| Ok((n.clone(), load_all(p)?)))
        .collect::<Result<_>>()?;
    let random_images: Vec<Vec<PixelImage>> = random_sets
        .iter()
        .map(|s| load_all(s))
        .collect::<Result<_>>()?;
    // The images of each class: the dataset's labels (single-label), else the model's
    // prediction; at most 40 per class.
    let mut per_class: Vec<Vec<PixelImage>> = vec![Vec::new(); cfg.num_classes];
    for i in 0..dataset.len() {
        let img = dataset.load(i, cfg.in_channels, cfg.resolution, classifier.resize_mode)?;
        let class = match labels.map(|l| &l[i]) {
            Some(Label::Class(c)) => *c,
            _ => classifier.predict(&[&img])?[0].class_index,
        };
        if per_class[class].len() < 40 {
            per_class[class].push(img);
        }
    }
    let mut results = Vec::new();
    for &layer in layers {
        eprintln!(
            "TCAV at {layer}: {} concepts, {} runs",
            concepts.len(),
            random_sets.len() - 1
        );
        let randoms: Vec<Vec<Vec<f32>>> = random_images
            .iter()
            .map(|s| {
                layer_activations(classifier.model(), &device, s, layer, 16).map_err(Into::into)
            })
            .collect::<Result<_>>()?;
        let grads: Vec<(String, Vec<Vec<f32>>)> = per_class
            .iter()
            .enumerate()
            .filter(|(_, imgs)| !imgs.is_empty())
            .map(|(k, imgs)| {
                Ok((
                    cfg.class_names[k].clone(),
                    layer_gradients(classifier.model(), &device, imgs, layer, k, 16)?,
                ))
            })
            .collect::<Result<_>>()?;
        for (name, imgs) in &concept_images {
            let acts = layer_activations(classifier.model(), &device, imgs, layer, 16)?;
            results.extend(tcav_test(name, layer, &acts, &randoms, &grads, 0.05, seed)?);
        }
    }
    adjust_for_multiple_tests(&mut results, 0.05);
    Ok(results)
}

fn save_figure(
    img: &image::RgbImage,
    out: &Path,
    file: &str,
    title: &str,
    caption: &str,
) -> Result<Figure> {
    let path = out.join(file);
    img.save(&path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(Figure {
        title: title.into(),
        file: file.into(),
        caption: caption.into(),
    })
}

fn evaluation_figures(ev: &EvalReport, out: &Path) -> Result<Vec<Figure>> {
    let mut figures = Vec::new();
    if !ev.sweep.is_empty() {
        write_sweep_chart(ev, &out.join("accuracy_vs_eps.png"))?;
        figures.push(Figure {
            title: "Accuracy against eps".into(),
            file: "accuracy_vs_eps.png".into(),
            caption: format!(
                "PGD-10 (L-inf, random start) on {} images at each radius.",
                ev.n
            ),
        });
    }
    // The main columns: clean and each attack at the evaluation's radius (the sweep and the
    // checks add other radii and a noise baseline).
    let with_metrics: Vec<_> = ev
        .results
        .iter()
        .filter(|r| r.metrics.is_some())
        .filter(|r| {
            r.attack == "clean" || (r.eps_linf == ev.eps_linf && r.attack != "uniform-noise")
        })
        .collect();
    for r in &with_metrics {
        if r.attack != "clean" && r.attack != "pgd10" {
            continue;
        }
        let Some(m) = &r.metrics else { continue };
        let title = format!("Confusion matrix, {}", r.attack);
        let img = render_confusion_matrix(&title, &ev.class_names, &m.confusion, 760, 640)?;
        figures.push(save_figure(
            &img,
            out,
            &format!("confusion_{}.png", r.attack),
            &title,
            "Rows: true class; columns: predicted; shade: share of the row (recall on the diagonal).",
        )?);
    }
    if !with_metrics.is_empty() {
        let series: Vec<(String, Vec<f64>)> = with_metrics
            .iter()
            .filter_map(|r| {
                r.metrics
                    .as_ref()
                    .map(|m| (r.attack.clone(), m.per_class_accuracy.clone()))
            })
            .collect();
        let img = render_bar_chart(
            "Recall per class, clean and under attack",
            "recall",
            &ev.class_names,
            &series,
            1.0,
            1000,
            520,
        )?;
        figures.push(save_figure(
            &img,
            out,
            "per_class_robust.png",
            "Per-class robust accuracy",
            &format!(
                "Recall of each class, clean and under each attack at {:.2}/255.",
                ev.eps_linf * 255.0
            ),
        )?);
    }
    Ok(figures)
}

fn explanation_figures(
    samples: &[SampleAudit],
    sanity: &[SanityEntry],
    tcav: &[TcavResult],
    method: Method,
    out: &Path,
) -> Result<Vec<Figure>> {
    let mut figures = Vec::new();
    if let Some(first) = samples.first() {
        let mean_curve = |f: &dyn Fn(&SampleAudit) -> &Vec<f64>| -> Vec<(f64, f64)> {
            let n = f(first).len();
            (0..n)
                .map(|k| {
                    let v: Vec<f64> = samples
                        .iter()
                        .filter_map(|s| f(s).get(k).copied())
                        .collect();
                    (
                        k as f64 / (n - 1).max(1) as f64,
                        v.iter().sum::<f64>() / v.len().max(1) as f64,
                    )
                })
                .collect()
        };
        let chart = LineChart {
            title: format!(
                "Deletion and insertion ({}, mean of {} images)",
                method.label(),
                samples.len()
            ),
            x_label: "fraction of pixels deleted / inserted".into(),
            y_label: "probability of the class".into(),
            series: vec![
                Series {
                    name: "deletion".into(),
                    points: mean_curve(&|s| &s.faithfulness.deletion_curve),
                    color: PALETTE[1],
                },
                Series {
                    name: "insertion".into(),
                    points: mean_curve(&|s| &s.faithfulness.insertion_curve),
                    color: PALETTE[0],
                },
                Series {
                    name: "deletion, random".into(),
                    points: mean_curve(&|s| &s.random_faithfulness.deletion_curve),
                    color: PALETTE[4],
                },
                Series {
                    name: "insertion, random".into(),
                    points: mean_curve(&|s| &s.random_faithfulness.insertion_curve),
                    color: PALETTE[5],
                },
            ],
            y_range: Some((0.0, 1.0)),
            x_ticks: Vec::new(),
        };
        figures.push(save_figure(
            &render_line_chart(&chart, 900, 520)?,
            out,
            "insertion_deletion.png",
            "Insertion and deletion curves",
            "RISE protocol: most salient pixels first, one row's worth per step; deletion to the normalisation mean, insertion from a Gaussian blur (sigma 5). A random map is the chance level.",
        )?);
    }
    let rows: Vec<(String, Vec<Tile>)> = samples
        .iter()
        .filter_map(|s| s.figures.as_ref().map(|f| (s, f)))
        .take(8)
        .map(|(s, f)| {
            let overlay = |rgb: &[u8], map: &[f32]| overlay_rgb8(rgb, map, Colormap::Jet, 0.45);
            let pgd = s.stability.iter().find(|x| x.attack == "pgd10");
            (
                format!(
                    "{}: {} > {}",
                    s.true_label,
                    s.predicted,
                    pgd.map(|p| p.adversarial_class.as_str()).unwrap_or("")
                ),
                vec![
                    (f.image.clone(), f.size),
                    (overlay(&f.image, &f.clean_map), f.size),
                    (f.adversarial.clone(), f.size),
                    (overlay(&f.adversarial, &f.adversarial_map), f.size),
                ],
            )
        })
        .collect();
    if !rows.is_empty() {
        let cols = ["image", "clean map", "PGD-10 image", "adversarial map"].map(String::from);
        figures.push(save_figure(
            &render_image_grid("Clean vs adversarial explanations", &cols, &rows, 160)?,
            out,
            "heatmap_grid.png",
            "Clean vs adversarial heatmaps",
            "Each row: true class, clean prediction > prediction under PGD-10. Both maps explain the clean prediction's class.",
        )?);
    }
    if !sanity.is_empty() {
        let series = sanity
            .iter()
            .enumerate()
            .map(|(k, s)| Series {
                name: format!("{} {}", s.method, short_id(&s.image)),
                points: std::iter::once((0.0, 1.0))
                    .chain(
                        s.check
                            .steps
                            .iter()
                            .enumerate()
                            .map(|(i, st)| ((i + 1) as f64, st.ssim)),
                    )
                    .collect(),
                color: PALETTE[k % PALETTE.len()],
            })
            .collect();
        let mut ticks = vec![(0.0, "none".to_string())];
        ticks.extend(
            CASCADE
                .iter()
                .enumerate()
                .map(|(i, s)| ((i + 1) as f64, format!("+{s}"))),
        );
        let chart = LineChart {
            title: "Sanity check: SSIM with the original map".into(),
            x_label: "randomised down to".into(),
            y_label: "SSIM".into(),
            series,
            y_range: Some((-0.2, 1.0)),
            x_ticks: ticks,
        };
        figures.push(save_figure(
            &render_line_chart(&chart, 900, 520)?,
            out,
            "sanity.png",
            "Cascading randomisation",
            "Adebayo et al.: stages re-initialised from the head down; a map that stays similar fails.",
        )?);
    }
    let mut layers: Vec<LayerId> = Vec::new();
    for t in tcav {
        if !layers.contains(&t.layer) {
            layers.push(t.layer);
        }
    }
    for layer in layers {
        let at_layer: Vec<&TcavResult> = tcav.iter().filter(|t| t.layer == layer).collect();
        let mut classes: Vec<String> = Vec::new();
        let mut concepts: Vec<String> = Vec::new();
        for t in &at_layer {
            if !classes.contains(&t.class_name) {
                classes.push(t.class_name.clone());
            }
            if !concepts.contains(&t.concept) {
                concepts.push(t.concept.clone());
            }
        }
        let find = |c: &str, k: &str| {
            at_layer
                .iter()
                .find(|t| t.concept == c && t.class_name == k)
        };
        let mut series: Vec<(String, Vec<f64>)> = concepts
            .iter()
            .map(|c| {
                let v = classes
                    .iter()
                    .map(|k| find(c, k).map(|t| t.mean).unwrap_or(f64::NAN))
                    .collect();
                (c.clone(), v)
            })
            .collect();
        let random = classes
            .iter()
            .map(|k| {
                find(&concepts[0], k)
                    .map(|t| t.random_mean)
                    .unwrap_or(f64::NAN)
            })
            .collect();
        series.push((format!("random ({})", concepts[0]), random));
        let title = format!("TCAV scores at {layer}");
        figures.push(save_figure(
            &render_bar_chart(&title, "TCAV score", &classes, &series, 1.0, 1000, 520)?,
            out,
            &format!("tcav_{layer}.png"),
            &title,
            "Share of each class's images whose class logit rises along the concept's CAV, mean \
             over runs; 'random' is the random-vs-random null. Significance is in the table.",
        )?);
    }
    Ok(figures)
}

/// The end of an image's name without its extension (fits a legend: "0024470").
fn short_id(id: &str) -> String {
    let stem = Path::new(id)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| id.to_string());
    let chars: Vec<char> = stem.chars().collect();
    chars[chars.len().saturating_sub(8)..].iter().collect()
}

fn print_summary(r: &AuditReport) {
    if let Some(ev) = &r.evaluation {
        for res in &ev.results {
            println!(
                "{:<14} eps {:>6.2}/255  {:.3}",
                res.attack,
                res.eps_linf * 255.0,
                res.score
            );
        }
    }
    let e = &r.explanation;
    println!(
        "{} on {} images: deletion AUC {:.3} (random {:.3}), insertion AUC {:.3} (random {:.3}), average drop {:.1}%, increase {:.1}%",
        e.method,
        e.samples,
        e.deletion_auc.mean,
        e.random_deletion_auc.mean,
        e.insertion_auc.mean,
        e.random_insertion_auc.mean,
        e.average_drop.mean,
        e.increase_in_confidence.mean
    );
    if let (Some(l), Some(p)) = (&e.localisation, &e.centre_prior_localisation) {
        println!(
            "localisation: IoU top15 {:.3} (centre prior {:.3}), energy PG {:.3} ({:.3}), pointing game {:.3} ({:.3}) over {} regions",
            l.iou_top15.mean,
            p.iou_top15.mean,
            l.energy_pointing_game.mean,
            p.energy_pointing_game.mean,
            l.pointing_game.mean,
            p.pointing_game.mean,
            l.iou_top15.n
        );
    }
    for s in &e.stability {
        println!(
            "stability {:<6} eps {:.2}/255: flipped {:.2}, SSIM {:.3}, Spearman {:.3}, top-15% overlap {:.3}",
            s.attack,
            s.eps_linf * 255.0,
            s.flip_rate.mean,
            s.ssim.mean,
            s.spearman.mean,
            s.top15_intersection.mean
        );
    }
    for s in &r.sanity {
        println!(
            "sanity {:<10} {}: SSIM after full randomisation {:.3} -> {}",
            s.method,
            s.image,
            s.check.steps.last().map(|x| x.ssim).unwrap_or(f64::NAN),
            if s.check.passed { "pass" } else { "FAIL" }
        );
    }
    for t in &r.tcav {
        println!(
            "TCAV {:<13} {} {:<6} {:.2} ± {:.2} (random {:.2}), p {:.2e}, Holm {:.2e}{}",
            t.concept,
            t.layer,
            t.class_name,
            t.mean,
            t.std,
            t.random_mean,
            t.p_value,
            t.p_holm,
            if t.significant { " *" } else { "" }
        );
    }
    for w in &r.warnings {
        println!("WARNING: {w}");
    }
    for n in &r.notes {
        println!("note: {n}");
    }
}
