//! The step DAG: runbook order by default, `needs` for explicit edges,
//! `needs: []` for roots. Built with petgraph; cycles are reported with
//! the steps involved.

use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::Direction;

use crate::model::error::{Error, Result};
use crate::model::playbook::Playbook;

/// The dependency graph of a playbook's steps (node weight: step index).
#[derive(Debug, Clone)]
pub struct Dag {
    graph: DiGraph<usize, ()>,
    order: Vec<usize>,
}

impl Dag {
    /// Build the DAG and check it is acyclic.
    pub fn build(pb: &Playbook) -> Result<Self> {
        let mut graph = DiGraph::with_capacity(pb.steps.len(), pb.steps.len());
        let nodes: Vec<NodeIndex> = (0..pb.steps.len()).map(|i| graph.add_node(i)).collect();
        let index_of = |id: &str| pb.steps.iter().position(|s| s.id == id);
        for (i, step) in pb.steps.iter().enumerate() {
            match &step.needs {
                None if i > 0 => {
                    graph.add_edge(nodes[i - 1], nodes[i], ());
                }
                None => {}
                Some(needs) => {
                    for n in needs {
                        let j = index_of(n).ok_or_else(|| {
                            Error::invalid(
                                "playbook",
                                format!("steps[{}].needs", step.file_index),
                                format!("step `{}` needs unknown step `{n}`", step.id),
                                Some(step.position.clone()),
                            )
                        })?;
                        graph.update_edge(nodes[j], nodes[i], ());
                    }
                }
            }
        }
        // A cycle is a strongly connected component with more than one
        // step, or a step that needs itself.
        for scc in tarjan_scc(&graph) {
            let self_loop = scc.len() == 1 && graph.contains_edge(scc[0], scc[0]);
            if scc.len() > 1 || self_loop {
                let mut idx: Vec<usize> = scc.iter().map(|n| graph[*n]).collect();
                idx.sort_unstable();
                let ids: Vec<String> = idx
                    .iter()
                    .map(|i| format!("`{}`", pb.steps[*i].id))
                    .collect();
                let first = &pb.steps[idx[0]];
                return Err(Error::invalid(
                    "playbook",
                    format!("steps[{}].needs", first.file_index),
                    format!(
                        "dependency cycle between steps {}; remove one of their `needs`",
                        ids.join(", ")
                    ),
                    Some(first.position.clone()),
                ));
            }
        }
        let order = stable_topo(&graph);
        Ok(Dag { graph, order })
    }

    /// Steps in a topological order that keeps file order among ready steps.
    pub fn order(&self) -> &[usize] {
        &self.order
    }

    /// Direct dependencies of a step.
    pub fn dependencies(&self, step: usize) -> Vec<usize> {
        let mut v: Vec<usize> = self
            .graph
            .neighbors_directed(NodeIndex::new(step), Direction::Incoming)
            .map(|n| self.graph[n])
            .collect();
        v.sort_unstable();
        v
    }

    /// Direct dependents of a step.
    pub fn dependents(&self, step: usize) -> Vec<usize> {
        let mut v: Vec<usize> = self
            .graph
            .neighbors_directed(NodeIndex::new(step), Direction::Outgoing)
            .map(|n| self.graph[n])
            .collect();
        v.sort_unstable();
        v
    }

    /// Waves of steps that may run together: every step of a wave depends
    /// only on steps of earlier waves.
    pub fn waves(&self) -> Vec<Vec<usize>> {
        let mut level = vec![0usize; self.graph.node_count()];
        for &s in &self.order {
            let l = self
                .dependencies(s)
                .iter()
                .map(|d| level[*d] + 1)
                .max()
                .unwrap_or(0);
            level[s] = l;
        }
        let depth = level.iter().copied().max().map_or(0, |m| m + 1);
        let mut waves = vec![Vec::new(); depth];
        for (s, l) in level.iter().enumerate() {
            waves[*l].push(s);
        }
        waves
    }

    /// A fresh scheduler over this DAG, for the executor.
    pub fn scheduler(&self) -> Scheduler<'_> {
        Scheduler {
            dag: self,
            remaining: (0..self.graph.node_count())
                .map(|s| self.dependencies(s).len())
                .collect(),
            started: vec![false; self.graph.node_count()],
        }
    }
}

/// Tracks which steps are ready as others finish: the executor's view of the DAG.
#[derive(Debug, Clone)]
pub struct Scheduler<'a> {
    dag: &'a Dag,
    remaining: Vec<usize>,
    started: Vec<bool>,
}

impl Scheduler<'_> {
    /// Steps whose dependencies are all done and that have not started, in file order.
    pub fn take_ready(&mut self) -> Vec<usize> {
        let mut ready = Vec::new();
        for s in 0..self.remaining.len() {
            if self.remaining[s] == 0 && !self.started[s] {
                self.started[s] = true;
                ready.push(s);
            }
        }
        ready
    }

    /// Record a finished step, releasing its dependents.
    pub fn finish(&mut self, step: usize) {
        for d in self.dag.dependents(step) {
            self.remaining[d] = self.remaining[d].saturating_sub(1);
        }
    }

    /// Whether every step has been handed out.
    pub fn all_started(&self) -> bool {
        self.started.iter().all(|s| *s)
    }
}

fn stable_topo(graph: &DiGraph<usize, ()>) -> Vec<usize> {
    let n = graph.node_count();
    let mut indeg: Vec<usize> = (0..n)
        .map(|i| {
            graph
                .neighbors_directed(NodeIndex::new(i), Direction::Incoming)
                .count()
        })
        .collect();
    let mut ready: std::collections::BTreeSet<usize> = (0..n).filter(|i| indeg[*i] == 0).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(s) = ready.pop_first() {
        order.push(s);
        for d in graph.neighbors_directed(NodeIndex::new(s), Direction::Outgoing) {
            let d = d.index();
            indeg[d] -= 1;
            if indeg[d] == 0 {
                ready.insert(d);
            }
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn pb(steps: &str) -> Result<Playbook> {
        Playbook::from_str(&format!("name: t\nsteps:\n{steps}"), Path::new("p.yml"))
    }

    const S: &str = "service: { name: a, state: started }";

    #[test]
    fn file_order_by_default() {
        let p = pb(&format!(
            "  - {{ id: a, {S} }}\n  - {{ id: b, {S} }}\n  - {{ id: c, {S} }}\n"
        ))
        .unwrap();
        let d = Dag::build(&p).unwrap();
        assert_eq!(d.waves(), vec![vec![0], vec![1], vec![2]]);
        assert_eq!(d.dependencies(2), vec![1]);
    }

    #[test]
    fn roots_and_explicit_needs_run_together() {
        let p = pb(&format!(
            "  - {{ id: a, {S} }}\n  - {{ id: b, {S} }}\n  - {{ id: c, needs: [], {S} }}\n  - {{ id: d, needs: [a, c], {S} }}\n"
        ))
        .unwrap();
        let d = Dag::build(&p).unwrap();
        assert_eq!(d.waves(), vec![vec![0, 2], vec![1, 3]]);
        let mut s = d.scheduler();
        assert_eq!(s.take_ready(), vec![0, 2]);
        s.finish(0);
        assert_eq!(s.take_ready(), vec![1]);
        s.finish(2);
        assert_eq!(s.take_ready(), vec![3]);
        assert!(s.all_started());
    }

    #[test]
    fn cycles_name_the_steps() {
        let p = pb(&format!(
            "  - {{ id: a, needs: [c], {S} }}\n  - {{ id: b, {S} }}\n  - {{ id: c, {S} }}\n"
        ))
        .unwrap();
        let e = Dag::build(&p).unwrap_err().details();
        assert!(e.contains("cycle between steps `a`, `b`, `c`"), "{e}");
        let p = pb(&format!("  - {{ id: a, needs: [a], {S} }}\n")).unwrap();
        let e = Dag::build(&p).unwrap_err().details();
        assert!(e.contains("cycle between steps `a`"), "{e}");
    }
}
