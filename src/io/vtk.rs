//! VTK XML files for ParaView: image data (`.vti`, a regular grid of points) and
//! unstructured grids (`.vtu`, points and cells), with point data arrays of any number
//! of components. Data are written as ASCII in Rust's shortest round-trip form, so a file
//! read back gives the same f64 values bit for bit; non-finite values are refused (VTK's
//! ASCII reader does not parse them), the caller masks instead.
//!
//! [`parse`] reads the subset this module writes (one piece, ASCII arrays); it exists
//! for the round-trip tests (`tests/export.rs`) and for tools that post-process exports.
//! Checked by the unit tests below (write → parse, bad input) and by `tests/export.rs`
//! (an exported model read back against the model evaluated directly).

use crate::error::{Error, Result};

/// VTK cell types used here.
pub const VTK_VERTEX: u8 = 1;
pub const VTK_LINE: u8 = 3;
pub const VTK_QUAD: u8 = 9;
pub const VTK_HEXAHEDRON: u8 = 12;

/// A named point-data array: `components` values per point, point-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Field {
    pub name: String,
    pub components: usize,
    pub data: Vec<f64>,
}

impl Field {
    pub fn scalar(name: impl Into<String>, data: Vec<f64>) -> Self {
        Field {
            name: name.into(),
            components: 1,
            data,
        }
    }
}

/// What a parsed file holds.
#[derive(Clone, Debug, PartialEq)]
pub enum Mesh {
    /// A regular grid: `dims` points per axis, first axis fastest.
    Image {
        origin: [f64; 3],
        spacing: [f64; 3],
        dims: [usize; 3],
    },
    /// Points (x, y, z) and cells (type, point indices).
    Unstructured {
        points: Vec<[f64; 3]>,
        cells: Vec<(u8, Vec<usize>)>,
    },
}

impl Mesh {
    pub fn num_points(&self) -> usize {
        match self {
            Mesh::Image { dims, .. } => dims.iter().product(),
            Mesh::Unstructured { points, .. } => points.len(),
        }
    }
}

/// A mesh with point data.
#[derive(Clone, Debug, PartialEq)]
pub struct VtkFile {
    pub mesh: Mesh,
    pub fields: Vec<Field>,
}

impl VtkFile {
    /// The field called `name`.
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// Check shapes and values, then serialise as VTK XML.
    pub fn to_xml(&self) -> Result<String> {
        let np = self.mesh.num_points();
        for f in &self.fields {
            if f.components == 0 || f.data.len() != np * f.components {
                return Err(Error::Shape(format!(
                    "VTK field `{}`: {} values for {np} points × {} components",
                    f.name,
                    f.data.len(),
                    f.components
                )));
            }
            if f.name.is_empty() || f.name.contains(['"', '<', '>', '&']) {
                return Err(Error::invalid(
                    "VTK field name",
                    &f.name,
                    "a non-empty name without quotes or markup characters",
                ));
            }
            if let Some(i) = f.data.iter().position(|v| !v.is_finite()) {
                return Err(Error::invalid(
                    format!("VTK field `{}` at point {}", f.name, i / f.components),
                    f.data[i],
                    "a finite number (mask points instead of writing NaN)",
                ));
            }
        }
        let mut s = String::from("<?xml version=\"1.0\"?>\n");
        match &self.mesh {
            Mesh::Image {
                origin,
                spacing,
                dims,
            } => {
                if dims.contains(&0) {
                    return Err(Error::invalid(
                        "VTK grid size",
                        format!("{dims:?}"),
                        "at least 1 point per axis",
                    ));
                }
                let extent = format!("0 {} 0 {} 0 {}", dims[0] - 1, dims[1] - 1, dims[2] - 1);
                s += "<VTKFile type=\"ImageData\" version=\"1.0\" byte_order=\"LittleEndian\">\n";
                s += &format!(
                    "<ImageData WholeExtent=\"{extent}\" Origin=\"{} {} {}\" Spacing=\"{} {} {}\">\n",
                    origin[0], origin[1], origin[2], spacing[0], spacing[1], spacing[2]
                );
                s += &format!("<Piece Extent=\"{extent}\">\n");
                point_data(&mut s, &self.fields);
                s += "<CellData>\n</CellData>\n</Piece>\n</ImageData>\n</VTKFile>\n";
            }
            Mesh::Unstructured { points, cells } => {
                for (c, (_, ids)) in cells.iter().enumerate() {
                    if let Some(&i) = ids.iter().find(|&&i| i >= points.len()) {
                        return Err(Error::Shape(format!(
                            "VTK cell {c} names point {i} of {}",
                            points.len()
                        )));
                    }
                }
                s += "<VTKFile type=\"UnstructuredGrid\" version=\"1.0\" byte_order=\"LittleEndian\">\n<UnstructuredGrid>\n";
                s += &format!(
                    "<Piece NumberOfPoints=\"{}\" NumberOfCells=\"{}\">\n",
                    points.len(),
                    cells.len()
                );
                point_data(&mut s, &self.fields);
                s += "<Points>\n";
                let flat: Vec<f64> = points.iter().flatten().copied().collect();
                array(
                    &mut s,
                    "Float64",
                    "Points",
                    3,
                    flat.iter().map(|v| v.to_string()),
                );
                s += "</Points>\n<Cells>\n";
                let conn = cells
                    .iter()
                    .flat_map(|(_, ids)| ids.iter().map(|i| i.to_string()));
                array(&mut s, "Int64", "connectivity", 1, conn);
                let offsets = cells.iter().scan(0usize, |o, (_, ids)| {
                    *o += ids.len();
                    Some(o.to_string())
                });
                array(&mut s, "Int64", "offsets", 1, offsets);
                array(
                    &mut s,
                    "UInt8",
                    "types",
                    1,
                    cells.iter().map(|(t, _)| t.to_string()),
                );
                s += "</Cells>\n</Piece>\n</UnstructuredGrid>\n</VTKFile>\n";
            }
        }
        Ok(s)
    }
}

fn point_data(s: &mut String, fields: &[Field]) {
    match fields.iter().find(|f| f.components == 1) {
        Some(f) => *s += &format!("<PointData Scalars=\"{}\">\n", f.name),
        None => *s += "<PointData>\n",
    }
    for f in fields {
        array(
            s,
            "Float64",
            &f.name,
            f.components,
            f.data.iter().map(|v| v.to_string()),
        );
    }
    *s += "</PointData>\n";
}

fn array(s: &mut String, ty: &str, name: &str, comps: usize, vals: impl Iterator<Item = String>) {
    *s += &format!(
        "<DataArray type=\"{ty}\" Name=\"{name}\" NumberOfComponents=\"{comps}\" format=\"ascii\">\n"
    );
    // a line per 3·comps values keeps lines short without a line per value
    for (i, v) in vals.enumerate() {
        if i > 0 {
            s.push(if i % (3 * comps.max(1)) == 0 {
                '\n'
            } else {
                ' '
            });
        }
        *s += &v;
    }
    *s += "\n</DataArray>\n";
}

fn fmt_err(msg: impl Into<String>) -> Error {
    Error::Format {
        path: "VTK XML".into(),
        msg: msg.into(),
    }
}

/// The value of `key="…"` in a tag's text.
fn attr<'a>(tag: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!(" {key}=\"");
    let i = tag.find(&pat)? + pat.len();
    let j = tag[i..].find('"')?;
    Some(&tag[i..i + j])
}

fn numbers<T: std::str::FromStr>(text: &str, what: &str) -> Result<Vec<T>> {
    text.split_ascii_whitespace()
        .map(|t| {
            t.parse::<T>()
                .map_err(|_| fmt_err(format!("{what}: `{t}` is not a number")))
        })
        .collect()
}

fn triple<T: std::str::FromStr + Copy>(tag: &str, key: &str) -> Result<Vec<T>> {
    let v = attr(tag, key).ok_or_else(|| fmt_err(format!("missing attribute {key}")))?;
    let v: Vec<T> = numbers(v, key)?;
    Ok(v)
}

/// Every `<DataArray …>text</DataArray>` in `body`: (opening tag, text).
fn data_arrays(body: &str) -> Result<Vec<(&str, &str)>> {
    let mut out = Vec::new();
    let mut rest = body;
    while let Some(i) = rest.find("<DataArray") {
        let tail = &rest[i..];
        let close = tail
            .find('>')
            .ok_or_else(|| fmt_err("unterminated DataArray tag"))?;
        let end = tail
            .find("</DataArray>")
            .ok_or_else(|| fmt_err("DataArray without </DataArray>"))?;
        out.push((&tail[..close], &tail[close + 1..end]));
        rest = &tail[end + "</DataArray>".len()..];
    }
    Ok(out)
}

/// Read a file written by [`VtkFile::to_xml`] (ASCII arrays, one piece).
pub fn parse(text: &str) -> Result<VtkFile> {
    let section = |open: &str, close: &str| -> Option<&str> {
        let i = text.find(open)?;
        let j = text[i..].find(close)?;
        Some(&text[i..i + j])
    };
    let pd = section("<PointData", "</PointData>").unwrap_or("");
    let mut fields = Vec::new();
    for (tag, body) in data_arrays(pd)? {
        let name = attr(tag, "Name").ok_or_else(|| fmt_err("DataArray without Name"))?;
        let components = match attr(tag, "NumberOfComponents") {
            Some(c) => c
                .parse()
                .map_err(|_| fmt_err(format!("NumberOfComponents `{c}`")))?,
            None => 1,
        };
        fields.push(Field {
            name: name.to_string(),
            components,
            data: numbers(body, name)?,
        });
    }
    let mesh = if text.contains("type=\"ImageData\"") {
        let img = section("<ImageData", ">").ok_or_else(|| fmt_err("no ImageData element"))?;
        let ext: Vec<usize> = triple(img, "WholeExtent")?;
        let origin: Vec<f64> = triple(img, "Origin")?;
        let spacing: Vec<f64> = triple(img, "Spacing")?;
        if ext.len() != 6 || origin.len() != 3 || spacing.len() != 3 {
            return Err(fmt_err("ImageData needs 6 extents, 3 origins, 3 spacings"));
        }
        Mesh::Image {
            origin: [origin[0], origin[1], origin[2]],
            spacing: [spacing[0], spacing[1], spacing[2]],
            dims: [
                ext[1] - ext[0] + 1,
                ext[3] - ext[2] + 1,
                ext[5] - ext[4] + 1,
            ],
        }
    } else if text.contains("type=\"UnstructuredGrid\"") {
        let pts = section("<Points>", "</Points>").ok_or_else(|| fmt_err("no Points"))?;
        let (_, body) = *data_arrays(pts)?
            .first()
            .ok_or_else(|| fmt_err("Points without a DataArray"))?;
        let flat: Vec<f64> = numbers(body, "Points")?;
        if !flat.len().is_multiple_of(3) {
            return Err(fmt_err("Points: not a multiple of 3 coordinates"));
        }
        let points = flat.chunks(3).map(|p| [p[0], p[1], p[2]]).collect();
        let cells_s = section("<Cells>", "</Cells>").ok_or_else(|| fmt_err("no Cells"))?;
        let mut conn = Vec::new();
        let mut offsets = Vec::new();
        let mut types = Vec::new();
        for (tag, body) in data_arrays(cells_s)? {
            match attr(tag, "Name") {
                Some("connectivity") => conn = numbers::<usize>(body, "connectivity")?,
                Some("offsets") => offsets = numbers::<usize>(body, "offsets")?,
                Some("types") => types = numbers::<u8>(body, "types")?,
                _ => {}
            }
        }
        if offsets.len() != types.len() {
            return Err(fmt_err("Cells: offsets and types differ in length"));
        }
        let mut cells = Vec::with_capacity(types.len());
        let mut start = 0;
        for (&end, &t) in offsets.iter().zip(&types) {
            if end < start || end > conn.len() {
                return Err(fmt_err(
                    "Cells: offsets out of order or past the connectivity",
                ));
            }
            cells.push((t, conn[start..end].to_vec()));
            start = end;
        }
        Mesh::Unstructured { points, cells }
    } else {
        return Err(fmt_err("neither ImageData nor UnstructuredGrid"));
    };
    let np = mesh.num_points();
    for f in &fields {
        if f.data.len() != np * f.components {
            return Err(fmt_err(format!(
                "field `{}` has {} values for {np} points × {}",
                f.name,
                f.data.len(),
                f.components
            )));
        }
    }
    Ok(VtkFile { mesh, fields })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_round_trip_is_exact() {
        let vals: Vec<f64> = (0..12).map(|i| (i as f64 * 0.1).sin() / 3.0).collect();
        let grad: Vec<f64> = (0..24).map(|i| 1e-300 * i as f64 - 7.25).collect();
        let f = VtkFile {
            mesh: Mesh::Image {
                origin: [0.1, -2.0, 0.0],
                spacing: [0.5, 1.0 / 3.0, 1.0],
                dims: [4, 3, 1],
            },
            fields: vec![
                Field::scalar("u", vals),
                Field {
                    name: "grad_u".into(),
                    components: 2,
                    data: grad,
                },
            ],
        };
        let back = parse(&f.to_xml().unwrap()).unwrap();
        assert_eq!(back, f);
    }

    #[test]
    fn unstructured_round_trip_is_exact() {
        let f = VtkFile {
            mesh: Mesh::Unstructured {
                points: vec![
                    [0.0, 0.0, 0.0],
                    [1.0, 0.0, 0.0],
                    [1.0, 1.0, 0.0],
                    [0.0, 1.0, 0.0],
                    [2.0, 0.5, 0.0],
                ],
                cells: vec![(VTK_QUAD, vec![0, 1, 2, 3]), (VTK_VERTEX, vec![4])],
            },
            fields: vec![Field::scalar(
                "u",
                vec![1.0, 2.0, 3.0, 4.0, std::f64::consts::PI],
            )],
        };
        let back = parse(&f.to_xml().unwrap()).unwrap();
        assert_eq!(back, f);
    }

    #[test]
    fn bad_fields_are_refused() {
        let mesh = Mesh::Image {
            origin: [0.0; 3],
            spacing: [1.0; 3],
            dims: [2, 1, 1],
        };
        let nan = VtkFile {
            mesh: mesh.clone(),
            fields: vec![Field::scalar("u", vec![0.0, f64::NAN])],
        };
        let e = nan.to_xml().unwrap_err().to_string();
        assert!(e.contains("`u` at point 1") && e.contains("finite"), "{e}");
        let short = VtkFile {
            mesh,
            fields: vec![Field::scalar("u", vec![0.0])],
        };
        assert!(short
            .to_xml()
            .unwrap_err()
            .to_string()
            .contains("1 values for 2 points"));
    }
}
